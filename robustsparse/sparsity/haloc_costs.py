"""HALOC's cost table: the cost of every compressible conv at every rank candidate (methods.md 15).

Two kinds: `macs` (the Tucker-2 formula, exact and deterministic) and `latency` (the compact
layer timed on a device at a batch size with `torch.utils.benchmark`, in milliseconds). A latency
table is measured once, saved as JSON (`robustsparse haloc-costs CONFIG --out FILE`) and named
by `sparsity.haloc_cost_table`, so a training run (and its resume) reads fixed numbers.

File format (JSON): `{"format", "kind", "unit", "device", "batch", "arch", "rank_multiple",
"layers": {conv name: {"dense": cost of the original conv, "ranks": {"r": cost}}}}`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils import benchmark

from reports.atomic import write_json_atomic
from robustsparse.errors import ConfigError
from robustsparse.sparsity.lowrank import (
    ConvGeometry,
    TuckerConv2d,
    compressible_convs,
    conv_geometry,
    conv_macs,
    rank_candidates,
    tucker_macs,
)

__all__ = [
    "COST_FORMAT",
    "macs_table",
    "latency_table",
    "build_cost_table",
    "save_cost_table",
    "load_cost_table",
]

log = logging.getLogger(__name__)

COST_FORMAT = "robustsparse.haloc_costs"


def macs_table(geometry: Mapping[str, ConvGeometry], multiple: int) -> dict[str, dict[str, Any]]:
    """Layer -> {"dense": MACs of the conv, "ranks": {r: MACs of its Tucker-2 form}} (one example)."""
    return {
        name: {
            "dense": float(conv_macs(g)),
            "ranks": {
                str(r): float(tucker_macs(g, r, r)) for r in rank_candidates(g.in_channels, g.out_channels, multiple)
            },
        }
        for name, g in geometry.items()
    }


def _time_ms(module: nn.Module, x: torch.Tensor, min_run_time: float) -> float:
    """Median milliseconds of one forward of `module` on `x` (no grad)."""
    with torch.no_grad():
        for _ in range(3):  # warm-up: first calls pay for allocation and kernel selection
            module(x)
        timer = benchmark.Timer(
            stmt="module(x)", globals={"module": module, "x": x}, num_threads=torch.get_num_threads()
        )
        return float(timer.blocked_autorange(min_run_time=min_run_time).median * 1000.0)


def latency_table(
    model: nn.Module,
    example: torch.Tensor,
    names: Sequence[str],
    multiple: int,
    *,
    device: torch.device,
    batch: int,
    min_run_time: float = 0.2,
) -> dict[str, dict[str, Any]]:
    """Layer -> {"dense": ms of the conv, "ranks": {r: ms of its compact rank-r layer}} at `batch`
    on `device` (random weights: the time does not depend on their values)."""
    geometry = conv_geometry(model, example, names)
    modules = dict(model.named_modules())
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        g, conv = geometry[name], modules[name]
        x = torch.randn(batch, g.in_channels, *g.in_hw, device=device)
        dense = nn.Conv2d(
            g.in_channels,
            g.out_channels,
            g.kernel,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            bias=conv.bias is not None,
        ).to(device)
        ranks = {}
        for r in rank_candidates(g.in_channels, g.out_channels, multiple):
            layer = TuckerConv2d(
                g.in_channels,
                g.out_channels,
                g.kernel,
                r,
                r,
                bias=conv.bias is not None,
                stride=conv.stride,
                padding=conv.padding,
                dilation=conv.dilation,
            ).to(device)
            ranks[str(r)] = _time_ms(layer.eval(), x, min_run_time)
        out[name] = {"dense": _time_ms(dense.eval(), x, min_run_time), "ranks": ranks}
        log.info("haloc costs: %s timed (%d ranks)", name, len(ranks))
    return out


def build_cost_table(
    model: nn.Module,
    example: torch.Tensor,
    cfg: Any,
    *,
    kind: str,
    device: torch.device,
    batch: int,
    min_run_time: float = 0.2,
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """The cost table of `model`'s compressible convs under haloc settings `cfg` (a `SparsityConfig`).

    Returns:
        (layers table, its description: kind, unit, device, batch, rank_multiple).
    """
    names = compressible_convs(model, keep_first_conv_dense=cfg.keep_first_conv_dense, keep_dense=cfg.keep_dense)
    multiple = int(cfg.haloc_rank_multiple)
    info: dict[str, Any] = {"kind": kind, "rank_multiple": multiple}
    if kind == "macs":
        return macs_table(conv_geometry(model, example, names), multiple), {**info, "unit": "MACs per example"}
    model = model.to(device)
    table = latency_table(
        model, example.to(device), names, multiple, device=device, batch=batch, min_run_time=min_run_time
    )
    return table, {**info, "unit": "ms per batch", "device": str(device), "batch": int(batch)}


def save_cost_table(path: str | Path, table: Mapping[str, Any], **info: Any) -> Path:
    """Write a cost table with its description (`kind`, `unit`, `device`, `batch`, ...) as JSON, atomically."""
    path = Path(path)
    write_json_atomic(path, {"format": COST_FORMAT, **info, "layers": dict(table)})
    return path


def load_cost_table(path: str | Path, layers: Mapping[str, Sequence[int]]) -> dict[str, Any]:
    """Read a cost table and check it covers every layer at every rank candidate.

    Args:
        layers: layer name -> its rank candidates.

    Raises:
        ConfigError: the file is missing, not a cost table, or lacks a layer or a rank (one line).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(
            f"config error: sparsity.haloc_cost_table = {str(path)!r} cannot be read ({type(exc).__name__}); "
            "build it with robustsparse haloc-costs CONFIG --out FILE"
        ) from None
    if not isinstance(data, dict) or data.get("format") != COST_FORMAT or not isinstance(data.get("layers"), dict):
        raise ConfigError(
            f"config error: {path} is not a haloc cost table; build it with robustsparse haloc-costs CONFIG --out FILE"
        )
    for name, candidates in layers.items():
        entry = data["layers"].get(name)
        missing = (
            [str(r) for r in candidates if str(r) not in entry.get("ranks", {})]
            if isinstance(entry, dict) and "dense" in entry
            else ["all"]
        )
        if missing:
            raise ConfigError(
                f"config error: {path} has no cost for layer {name!r} at rank(s) {', '.join(missing)}; "
                "it was built for another model or rank multiple - rebuild it with robustsparse haloc-costs"
            )
    return data
