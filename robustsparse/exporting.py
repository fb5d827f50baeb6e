"""Exported checkpoints: `compressed` (kept values + cheapest index) and `compact` (fewer channels).

Both are files of tensors and plain data, written atomically and read with
`torch.load(weights_only=True)`, like every robustsparse checkpoint.

- `compressed`: the sparsity engine's encoding (`sparsity.encoding`); loading it back gives the
  masked state dict bit for bit.
- `compact` (filter / channel granularities, and models with channels removed by a method such
  as hybrid): the model with its removed channels cut out
  (`sparsity.compact_model`); the stored shapes tell the loader how to resize each layer of the
  registered architecture, so no code is stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustsparse.checkpoints import ModelSpec, load_checkpoint_with_masks, read_checkpoint, resolve_checkpoint_path
from robustsparse.errors import CheckpointError
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

__all__ = ["ExportSummary", "export_checkpoint", "load_exported", "COMPRESSED_KIND", "COMPACT_KIND"]

COMPRESSED_KIND = "robustsparse.export.compressed"
COMPACT_KIND = "robustsparse.export.compact"
COMPACT_GRANULARITIES = ("filter", "channel")
OUTPUT_TOLERANCE = 1e-5


@dataclass(frozen=True)
class ExportSummary:
    """What was written, and how it compares with the dense checkpoint."""

    path: Path
    fmt: str
    dense_bytes: int
    exported_bytes: int
    details: dict[str, Any]

    def __str__(self) -> str:
        ratio = self.dense_bytes / self.exported_bytes if self.exported_bytes else float("inf")
        lines = [
            f"wrote {self.path} ({self.fmt})",
            f"size: {self.exported_bytes:,} bytes vs {self.dense_bytes:,} dense ({ratio:.2f}x smaller)",
        ]
        lines += [f"{key}: {value}" for key, value in self.details.items()]
        return "\n".join(lines)


def _spec_dict(payload: dict[str, Any]) -> dict[str, Any]:
    return dict(payload["model_spec"])


def export_checkpoint(path: str | Path, *, fmt: str, out: str | Path | None = None) -> ExportSummary:
    """Export a checkpoint as `compressed` or `compact` and verify the export on the way.

    Raises:
        CheckpointError: the checkpoint is unsafe or inconsistent, `compact` was asked for a
            granularity other than filter/channel, or the export failed its own check.
    """
    file = resolve_checkpoint_path(path)
    model, meta, masks = load_checkpoint_with_masks(file)
    spec = _spec_dict(read_checkpoint(file))
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    dense_bytes = dense_size_bytes(state)
    if fmt == "compressed":
        blob = export_compressed(state, masks, meta.get("sparsity"))
        restored = load_compressed(blob)
        if set(restored) != set(state) or not all(_bit_equal(restored[k], state[k]) for k in state):
            raise CheckpointError(
                f"{file}: the compressed export does not restore the weights bit for bit; not written"
            )
        target = Path(out) if out is not None else file.with_name("model.compressed.pt")
        torch_save_atomic(target, {"format": COMPRESSED_KIND, "model_spec": spec, "meta": meta, "blob": blob})
        return ExportSummary(
            target,
            fmt,
            dense_bytes,
            compressed_size_bytes(blob),
            {"granularity": meta.get("granularity"), "bit_identical": True},
        )
    if fmt != "compact":
        raise CheckpointError(f"unknown export format {fmt!r}; allowed: compressed, compact")
    # Whole channels are gone with filter / channel pruning, or where a method removed some on
    # top of finer pruning (hybrid's channel stage: the compact model keeps the finer zeros).
    removed = (meta.get("sparsity") or {}).get("pruned_channels") or {}
    if meta.get("granularity") not in COMPACT_GRANULARITIES and not any(removed.values()):
        raise CheckpointError(
            f"{file}: compact export needs whole channels removed (filter or channel pruning, or hybrid's "
            f"channel stage), this model is {meta.get('granularity')!r} with none removed; use --format compressed"
        )
    small = compact_model(model, masks).eval()
    info = meta.get("data", {}).get("info", {})
    example = torch.rand(
        4,
        int(info.get("in_channels", 3)),
        int(info.get("image_size", 32)),
        int(info.get("image_size", 32)),
        generator=torch.Generator().manual_seed(0),
    )
    with torch.no_grad():
        gap = float((small(example) - model(example)).abs().max())
    if gap > OUTPUT_TOLERANCE:
        raise CheckpointError(
            f"{file}: the compacted model's outputs differ by {gap:.2e} (> {OUTPUT_TOLERANCE}); not written"
        )
    small_state = {k: v.detach().clone() for k, v in small.state_dict().items()}
    target = Path(out) if out is not None else file.with_name("model.compact.pt")
    torch_save_atomic(target, {"format": COMPACT_KIND, "model_spec": spec, "meta": meta, "state_dict": small_state})
    shape = example.shape[1:]
    before, after = model_cost(model, shape), model_cost(small, shape)
    return ExportSummary(
        target,
        fmt,
        dense_bytes,
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
    model = ModelSpec.from_dict(payload["model_spec"]).build()
    state = load_compressed(payload["blob"]) if kind == COMPRESSED_KIND else payload["state_dict"]
    if kind == COMPACT_KIND:
        _resize_to(model, state)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the architecture ({str(exc).splitlines()[0]})") from None
    return model.eval(), dict(payload["meta"])
