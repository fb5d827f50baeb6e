"""`torch-prune`: a state dict in the layout of `torch.nn.utils.prune` (`weight_orig` + `weight_mask`).

A user of `torch.nn.utils.prune` loads it by pruning the same modules of the architecture (any
pruning call reparametrises them; `prune.identity` is the cheapest) and calling
`load_state_dict`: `apply_torch_prune_layout` does exactly that, and is how the export checks
itself. The file is a plain dict of tensors (`torch.load(weights_only=True)` reads it).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import prune

from robustsparse.checkpoints import ModelSpec
from robustsparse.errors import CheckpointError
from robustsparse.exporting.base import ExportSource, ExportSummary, check_outputs, example_input
from robustsparse.sparsity import dense_size_bytes
from robustsparse.utils.atomic import torch_save_atomic

__all__ = ["to_torch_prune_state", "apply_torch_prune_layout", "export_torch_prune_file", "ORIG", "MASK"]

ORIG, MASK = "_orig", "_mask"


def to_torch_prune_state(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`model`'s state dict with every masked parameter `p` split into `p_orig` and `p_mask`.

    The stored mask is float (as `torch.nn.utils.prune` keeps it) and the original holds the
    weights as they are (masked entries already zero), so `orig * mask` is the weight itself.
    """
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for name, mask in masks.items():
        if name not in state:
            raise CheckpointError(f"mask {name!r} names no parameter of the model")
        value = state.pop(name)
        state[name + ORIG] = value
        state[name + MASK] = mask.to(dtype=value.dtype, device=value.device).clone()
    return state


def apply_torch_prune_layout(model: nn.Module, state: Mapping[str, torch.Tensor]) -> nn.Module:
    """Reparametrise `model` as `torch.nn.utils.prune` would for `state`, then load it (strict).

    Every `<module>.<param>_mask` key prunes that parameter with `prune.identity`, so the loaded
    masks are `state`'s own. Returns `model`.
    """
    modules = dict(model.named_modules())
    for key in state:
        if not key.endswith(MASK):
            continue
        module_name, _, param = key[: -len(MASK)].rpartition(".")
        if module_name not in modules or not hasattr(modules[module_name], param):
            raise CheckpointError(f"{key!r} names no parameter of the architecture")
        prune.identity(modules[module_name], param)
    model.load_state_dict(dict(state), strict=True)
    return model


def export_torch_prune_file(source: ExportSource, out: Path | None) -> ExportSummary:
    """Write the `torch.nn.utils.prune` layout and check it loads back with the same masks and outputs."""
    state = to_torch_prune_state(source.model, source.masks)
    copy = apply_torch_prune_layout(ModelSpec.from_dict(source.spec).build().eval(), state)
    for name, mask in source.masks.items():
        module_name, _, param = name.rpartition(".")
        loaded = dict(copy.named_buffers())[f"{module_name}.{param}{MASK}"]
        if not torch.equal(loaded.bool(), mask.bool()):
            raise CheckpointError(
                f"{source.file}: the mask of {name} does not survive the torch-prune layout; not written"
            )
    gap = check_outputs(source.model, copy, example_input(source.meta), f"{source.file}: the torch-prune layout")
    target = out if out is not None else source.file.with_name("model.torch_prune.pt")
    torch_save_atomic(target, state)
    return ExportSummary(
        target,
        "torch-prune",
        dense_size_bytes(source.model.state_dict()),
        dense_size_bytes(state),
        {
            "pruned parameters": len(source.masks),
            "load with": "prune.identity(module, 'weight') on each of them, then load_state_dict",
            "max output difference": f"{gap:.2e}",
        },
    )
