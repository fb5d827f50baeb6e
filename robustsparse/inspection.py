"""`robustsparse inspect`: what a checkpoint is, and whether its weights agree with its metadata.

A low-rank model (haloc) also gets its factorised layers listed with their ranks, parameters
and MACs beside the original conv's.

Loading already refuses unsafe files, non-zero masked weights and a sparsity that disagrees
with the metadata; inspection adds the structure check of the granularity (for `kernel` each
kernel all-zero or untouched, for `window` the same count in every kept kernel, and so on) and
reports every problem it finds. The `meta.json` beside the checkpoint is what the attack sweep
and the report read, so it must say exactly what the checkpoint's own copy of the metadata says:
any field that differs (model_id, arch, granularity, sparsity, masks' settings...) is refused.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from reports.contract import META_FILE
from robustsparse.checkpoints import load_checkpoint_with_masks, read_meta, resolve_checkpoint_path
from robustsparse.errors import CheckpointError
from robustsparse.models import MixtureNorm2d
from robustsparse.sparsity import layer_sparsity_table, model_cost, verify_structure
from robustsparse.sparsity.lowrank import lowrank_layer_table, lowrank_ranks

__all__ = ["Inspection", "inspect_checkpoint", "meta_differences"]

_ABSENT = object()


def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{100 * float(value):.2f}%"


@dataclass(frozen=True)
class Inspection:
    """The facts about one checkpoint and the problems found in it."""

    path: Path
    meta: dict[str, Any]
    cost: dict[str, int]
    layers: pd.DataFrame
    problems: list[str] = field(default_factory=list)
    #: module name -> components K of every MixtureNorm2d (empty: batch normalisation only)
    mixture: dict[str, int] = field(default_factory=dict)
    lowrank: pd.DataFrame | None = None

    def render(self, *, layers: bool = False) -> str:
        """Human-readable summary (and the per-layer table when `layers`)."""
        m = self.meta
        lines = [
            f"checkpoint   {self.path}",
            f"model_id     {m.get('model_id')}",
            f"arch         {m.get('arch')}    dataset {m.get('dataset')}    seed {m.get('seed')}",
            f"method       {m.get('method')}    granularity {m.get('granularity')}",
            f"sparsity     target {_pct(m.get('target_sparsity'))}    achieved (prunable) {_pct(m.get('achieved_sparsity'))}"
            f"    (all weights) {_pct(m.get('achieved_sparsity_all'))}",
            f"parameters   {self.cost['params']:,} ({self.cost['nonzero_params']:,} non-zero)",
            f"MACs         {self.cost['dense_macs']:,} dense, {self.cost['effective_macs']:,} effective",
            f"accuracy     clean test {_pct(m.get('clean_acc'))} on {m.get('n_test')} examples    epochs {m.get('epochs')}",
            f"parent       {m.get('parent')}",
            f"structure    {'ok' if not self.problems else f'{len(self.problems)} problem(s)'}",
        ]
        if self.mixture:
            at = ", ".join(f"{name} (K={k})" for name, k in self.mixture.items())
            lines.append(f"normalisation mixture at {at}")
        if self.lowrank is not None and len(self.lowrank):
            # a low-rank model: its ranks, parameters and MACs per factorised layer, always shown
            lines += ["", "low-rank layers (ranks, parameters and MACs per example; dense = the original conv)"]
            lines += [self.lowrank.to_string(index=False)]
        if layers:
            lines += ["", self.layers.to_string(index=False, float_format=lambda v: f"{v:.4f}")]
        return "\n".join(lines)


def _as_json(value: Any) -> str:
    # compared as JSON text: what meta.json can hold, and NaN equals NaN
    return "<absent>" if value is _ABSENT else json.dumps(value, sort_keys=True)


def meta_differences(side: Mapping[str, Any], stored: Mapping[str, Any]) -> list[str]:
    """Every field on which `meta.json` (`side`) and the checkpoint's metadata (`stored`) differ.

    Returns:
        One short line per field (`granularity: 'filter' in meta.json, 'element' in the checkpoint`),
        in the checkpoint's field order, then fields only meta.json has.
    """
    keys = list(stored) + [k for k in side if k not in stored]
    out = []
    for key in keys:
        mine, theirs = _as_json(side.get(key, _ABSENT)), _as_json(stored.get(key, _ABSENT))
        if mine != theirs:
            out.append(f"{key}: {mine[:60]} in {META_FILE}, {theirs[:60]} in the checkpoint")
    return out


def _check_meta_file(file: Path, stored: Mapping[str, Any]) -> None:
    if not (file.parent / META_FILE).is_file():
        return  # a checkpoint on its own (e.g. copied out of its folder) carries its metadata inside
    differences = meta_differences(read_meta(file.parent), stored)
    if differences:
        more = f" (and {len(differences) - 1} more field(s))" if len(differences) > 1 else ""
        raise CheckpointError(
            f"{file.parent / META_FILE} disagrees with {file.name}: {differences[0]}{more}; meta.json was edited "
            f"or the folder mixes two models - restore meta.json from the checkpoint or re-train the model"
        )


def inspect_checkpoint(path: str | Path) -> Inspection:
    """Load `path` safely and check its structure and sparsity against its metadata.

    Raises:
        CheckpointError: unsafe, corrupt or foreign file, masks/sparsity inconsistent, or a
            `meta.json` beside it that differs from the checkpoint's metadata in any field.
    """
    file = resolve_checkpoint_path(path)
    model, meta, masks = load_checkpoint_with_masks(file)
    _check_meta_file(file, meta)
    masks = masks or None
    info = meta.get("data", {}).get("info", {})
    size = int(info.get("image_size", 32))
    channels = int(info.get("in_channels", 3))
    cost = model_cost(model, (1, channels, size, size), masks)
    problems = verify_structure(model, masks, meta)
    table = layer_sparsity_table(model, masks, meta.get("sparsity"))
    mixture = {name: m.components for name, m in model.named_modules() if isinstance(m, MixtureNorm2d)}
    example = next(model.parameters()).new_zeros((1, channels, size, size))
    lowrank = lowrank_layer_table(model, example) if lowrank_ranks(meta) else None
    return Inspection(file, meta, cost, table, problems, mixture=mixture, lowrank=lowrank)
