"""robustsparse's own export formats: `compressed` (kept values + cheapest index), `compact` (fewer channels).

Both are files of tensors and plain data, written atomically and read with
`torch.load(weights_only=True)`, like every robustsparse checkpoint.

- `compressed`: the sparsity engine's encoding (`sparsity.encoding`); loading it back gives the
  masked state dict bit for bit.
- `compact` (filter / channel granularities): the model with its removed channels cut out
  (`sparsity.compact_model`); the stored shapes tell the loader how to resize each layer of the
  registered architecture, so no code is stored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustsparse.checkpoints import ModelSpec, build_from_meta
from robustsparse.errors import CheckpointError
from robustsparse.exporting.base import (
    ExportSource,
    ExportSummary,
    check_outputs,
    compact_allowed,
    example_input,
)
from robustsparse.models import NormalizedModel
from robustsparse.sparsity import (
    compact_model,
    compressed_size_bytes,
    dense_size_bytes,
    export_compressed,
    load_compressed,
    model_cost,
)
from robustsparse.utils.atomic import torch_save_atomic

__all__ = [
    "export_compressed_file",
    "export_compact_file",
    "compacted",
    "load_exported",
    "COMPRESSED_KIND",
    "COMPACT_KIND",
]

COMPRESSED_KIND = "robustsparse.export.compressed"
COMPACT_KIND = "robustsparse.export.compact"


def export_compressed_file(source: ExportSource, out: Path | None) -> ExportSummary:
    """Only the kept values plus the cheapest index for the granularity; loads back bit for bit."""
    state = {k: v.detach().clone() for k, v in source.model.state_dict().items()}
    blob = export_compressed(state, source.masks, source.meta.get("sparsity"))
    restored = load_compressed(blob)
    if set(restored) != set(state) or not all(_bit_equal(restored[k], state[k]) for k in state):
        raise CheckpointError(
            f"{source.file}: the compressed export does not restore the weights bit for bit; not written"
        )
    target = out if out is not None else source.file.with_name("model.compressed.pt")
    torch_save_atomic(target, {"format": COMPRESSED_KIND, "model_spec": source.spec, "meta": source.meta, "blob": blob})
    return ExportSummary(
        target,
        "compressed",
        dense_size_bytes(state),
        compressed_size_bytes(blob),
        {"granularity": source.meta.get("granularity"), "bit_identical": True},
    )


def compacted(source: ExportSource) -> tuple[nn.Module, float]:
    """The model with its pruned channels cut out, and its largest output difference.

    Raises:
        CheckpointError: the granularity is not filter / channel, or the outputs moved.
    """
    if not compact_allowed(source):
        raise CheckpointError(
            f"{source.file}: compacting needs whole channels removed (filter or channel pruning, or hybrid's "
            f"channel stage), this model is {source.meta.get('granularity')!r} with none removed; "
            "export it masked (without --compact) or as compressed"
        )
    small = compact_model(source.model, source.masks).eval()
    gap = check_outputs(source.model, small, example_input(source.meta), f"{source.file}: the compacted model")
    return small, gap


def export_compact_file(source: ExportSource, out: Path | None) -> ExportSummary:
    """The model rebuilt with fewer channels; the stored shapes say how to resize each layer."""
    small, gap = compacted(source)
    small_state = {k: v.detach().clone() for k, v in small.state_dict().items()}
    target = out if out is not None else source.file.with_name("model.compact.pt")
    torch_save_atomic(
        target, {"format": COMPACT_KIND, "model_spec": source.spec, "meta": source.meta, "state_dict": small_state}
    )
    shape = example_input(source.meta).shape[1:]
    before, after = model_cost(source.model, shape), model_cost(small, shape)
    return ExportSummary(
        target,
        "compact",
        dense_size_bytes(source.model.state_dict()),
        dense_size_bytes(small_state),
        {
            "params": f"{before['params']:,} -> {after['params']:,}",
            "MACs": f"{before['dense_macs']:,} -> {after['dense_macs']:,}",
            "max output difference": f"{gap:.2e}",
        },
    )


def _bit_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if not a.is_floating_point():
        return torch.equal(a, b)
    # Compare the bytes: -0.0 vs +0.0 and NaN payloads count as differences.
    return torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))


def _resize_to(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Give every layer of `model` the shapes stored in `state` (compact exports)."""
    own = model.state_dict()
    modules = dict(model.named_modules())
    for key, value in state.items():
        if key not in own or own[key].shape == value.shape:
            continue
        module_name, _, leaf = key.rpartition(".")
        module = modules[module_name]
        if isinstance(getattr(module, leaf), nn.Parameter):
            setattr(module, leaf, nn.Parameter(torch.empty_like(value)))
        else:
            module.register_buffer(leaf, torch.empty_like(value))
        if leaf == "weight" and isinstance(module, nn.Conv2d):
            module.out_channels, module.in_channels = int(value.shape[0]), int(value.shape[1]) * module.groups
        elif leaf == "weight" and isinstance(module, nn.Linear):
            module.out_features, module.in_features = int(value.shape[0]), int(value.shape[1])
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.num_features = int(value.shape[0])


def load_exported(path: str | Path) -> tuple[NormalizedModel, dict[str, Any]]:
    """Load a `compressed` or `compact` export (safely) into a model in eval mode on the CPU."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unsafe or corrupt: never executed, always refused
        raise CheckpointError(
            f"cannot load export {path}: {type(exc).__name__}; only files written by robustsparse export load"
        ) from None
    kind = payload.get("format") if isinstance(payload, dict) else None
    if kind not in (COMPRESSED_KIND, COMPACT_KIND):
        raise CheckpointError(f"{path} is not a robustsparse export (format {kind!r})")
    model = build_from_meta(ModelSpec.from_dict(payload["model_spec"]), payload["meta"])  # low-rank layers too
    state = load_compressed(payload["blob"]) if kind == COMPRESSED_KIND else payload["state_dict"]
    if kind == COMPACT_KIND:
        _resize_to(model, state)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the architecture ({str(exc).splitlines()[0]})") from None
    return model.eval(), dict(payload["meta"])
