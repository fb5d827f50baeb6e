"""Accounting: per-layer sparsity table, structure checks, dense and effective MACs.

The structure check says, for each layer, whether its zeros have the shape its granularity
promises: `kernel` / `row` (each group all-zero or untouched), `window` (every kernel keeps
exactly the same number of weights; with a `dense_period` P, as psconv's, kernel (k, c) with
(k + c + 1) % P == 0 keeps all), `window+kernel` (every kernel keeps that number or
none), `n:m` (every group of m has at most n non-zeros), `filter` / `channel` (whole channels:
the producer's filter, its bias, its BatchNorm scale and shift and the consumers' input
columns), `element` (masked weights are zero). Everything is computed from the model, the
masks and the JSON metadata of the pruner (`CampfirePruner.metadata()` or
`granularity_info()`), so a checkpoint can be checked without the pruner.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import torch
from torch import nn

from reports.contract import LAYER_SPARSITY, LAYER_TOTAL_KIND, LAYER_TOTAL_NAMES
from robustsparse.sparsity.coupling import ChannelGroup
from robustsparse.sparsity.granularity import RowView, group_description
from robustsparse.sparsity.layers import conv_linear_layers
from robustsparse.sparsity.masks import achieved_sparsity, prunable_weight_names

__all__ = [
    "model_cost",
    "eval_forward_with_hooks",
    "layer_sparsity_table",
    "verify_structure",
    "structure_problems",
    "TABLE_COLUMNS",
]

# the columns of layer_sparsity.csv, as the run folder's contract has them
TABLE_COLUMNS = LAYER_SPARSITY.names
# the two closing rows: totals over the prunable weights and over all weights
PRUNABLE_TOTAL, ALL_TOTAL = LAYER_TOTAL_NAMES
# Measured and recorded sparsity must agree to within one weight in a million.
_SPARSITY_TOLERANCE = 1e-6


def _info(metadata: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Accept the pruner's metadata, its granularity_info, or a checkpoint meta holding it under 'sparsity'."""
    if not metadata:
        return None
    inner = metadata.get("sparsity")
    if isinstance(inner, Mapping) and "layers" in inner:
        return dict(inner)
    return dict(metadata)


@torch.no_grad()
def model_cost(
    model: nn.Module, input_shape: Sequence[int] | torch.Tensor, masks: Mapping[str, torch.Tensor] | None = None
) -> dict[str, int]:
    """Dense and effective multiply-accumulates of one example, and parameter counts.

    MACs are counted for conv and linear layers with forward hooks on one example: dense
    counts every weight at every output position, effective counts only non-zero (and
    unmasked) weights, i.e. what a sparse kernel that skips zeros would do.

    Args:
        model: any module.
        input_shape: shape of the input, with or without a batch dimension (e.g. (3, 32, 32)),
            or an example tensor.
        masks: optional masks; masked weights count as zero even if not yet applied.

    Returns:
        `{"dense_macs", "effective_macs", "params", "nonzero_params"}` per example.
    """
    params = dict(model.named_parameters())
    first = next(iter(params.values()), None)
    device = first.device if first is not None else torch.device("cpu")
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
    if isinstance(input_shape, torch.Tensor):
        example = input_shape.to(device)
    else:
        shape = tuple(int(s) for s in input_shape)
        example = torch.zeros((1, *shape) if len(shape) == 3 else shape, device=device, dtype=dtype)
    batch = example.shape[0]
    masks = masks or {}
    names = {id(m): n for n, m in model.named_modules()}

    def nonzero(weight_name: str) -> int:
        w = params[weight_name]
        keep = w != 0
        if weight_name in masks:
            keep &= masks[weight_name].to(w.device)
        return int(keep.sum())

    totals = {"dense": 0, "effective": 0}

    def hook(module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        per_weight = output.numel() // (batch * output.shape[1 if isinstance(module, nn.Conv2d) else -1])
        name = names[id(module)]
        weight_name = f"{name}.weight" if name else "weight"
        totals["dense"] += per_weight * module.weight.numel()
        totals["effective"] += per_weight * nonzero(weight_name)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    eval_forward_with_hooks(model, example, handles)
    n_params = sum(p.numel() for p in params.values())
    nonzero_params = sum(nonzero(n) if n in masks else int((p != 0).sum()) for n, p in params.items())
    return {
        "dense_macs": int(totals["dense"]),
        "effective_macs": int(totals["effective"]),
        "params": int(n_params),
        "nonzero_params": int(nonzero_params),
    }


def _shape4(t: torch.Tensor) -> tuple[int, int, int, int]:
    if t.dim() == 4:
        return tuple(int(s) for s in t.shape)  # type: ignore[return-value]
    return int(t.shape[0]), int(t.shape[1]), 1, 1


def _row_problems(weight: torch.Tensor, mask: torch.Tensor | None, spec: Mapping[str, Any]) -> list[str]:
    """Structure problems of one layer under a row-view granularity."""
    g = spec.get("granularity")
    if g in (None, "element", "dense") or "view" not in spec or spec["view"] == "channel":
        return []
    view = RowView(spec["view"], _shape4(weight), int(spec["block"]))
    valid = view.valid(weight.device)
    out = []
    nonzero = view.rows(weight.detach() != 0, pad=False)
    kept = view.rows(mask.to(weight.device), pad=False) if mask is not None else None
    what = {"row": "rows", "kernel": "kernels", "column": "columns", "cblock": "channel blocks", "nm": "groups"}.get(
        view.kind, "groups"
    )
    if "keep" not in spec:  # whole rows kept or dropped
        if kept is not None:
            partial = kept.any(1) & ~(kept | ~valid).all(1)
            if bool(partial.any()):
                out.append(f"{int(partial.sum())} {what} partly masked ({g} keeps or drops whole {what})")
        return out
    keep = int(spec["keep"])
    expected = torch.clamp(valid.sum(1), max=keep)
    period = spec.get("dense_period")
    if period and view.kind == "kernel":  # psconv: kernel (k, c) with (k + c + 1) % period == 0 is dense
        n = torch.arange(view.shape[0])[:, None] + torch.arange(view.shape[1])[None, :] + 1
        expected = torch.where((n % int(period) == 0).reshape(-1).to(weight.device), valid.sum(1), expected)
    too_many = nonzero.sum(1) > expected
    if bool(too_many.any()):
        out.append(f"{int(too_many.sum())} {what} have more than {keep} non-zeros")
    if kept is not None:
        count = kept.sum(1)
        bad = count != expected
        if spec.get("kernel_stage"):
            bad &= count != 0
        if bool(bad.any()):
            allowed = f"0 or {keep}" if spec.get("kernel_stage") else f"exactly {keep}"
            allowed += f" (all in the periodic dense kernels, period {period})" if period else ""
            out.append(f"{int(bad.sum())} {what} keep another number than {allowed} weights")
    return out


def _channel_problems(
    params: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor] | None, info: Mapping[str, Any]
) -> dict[str, list[str]]:
    """Problems per producer weight for filter / channel: whole channels, coupled params zero."""
    out: dict[str, list[str]] = {}
    recorded = info.get("pruned_channels") or {}
    for raw in info.get("channel_groups") or []:
        g = ChannelGroup.from_dict(raw)
        wname = f"{g.producer}.weight"
        if wname not in params:
            out.setdefault(wname, []).append(f"channel group producer {g.producer!r} is not in the model")
            continue
        w = params[wname].detach()
        problems = out.setdefault(wname, [])
        if masks is not None and wname in masks:
            # Partly masked filters show up in _channel_mask_mismatch (a producer can also be a consumer).
            gone = ~masks[wname].to(w.device).reshape(g.channels, -1).any(1)
        else:
            gone = ~(w.reshape(g.channels, -1) != 0).any(1)
        n_gone = int(gone.sum())
        if masks is None and g.producer in recorded and n_gone != int(recorded[g.producer]):
            problems.append(f"{n_gone} all-zero filters, metadata says {recorded[g.producer]} removed")
        if n_gone == 0:
            continue
        if bool((w.reshape(g.channels, -1)[gone] != 0).any()):
            problems.append("removed filters have non-zero weights")
        coupled = [f"{g.producer}.bias"] + [f"{bn}.{leaf}" for bn in g.norms for leaf in ("weight", "bias")]
        for name in coupled:
            if name not in params:
                continue
            alive = int((params[name].detach()[gone.to(params[name].device)] != 0).sum())
            if alive:
                problems.append(
                    f"{name} is non-zero on {alive} removed channels "
                    "(a removed filter must zero its BatchNorm scale/shift and bias)"
                )
        keep = ~gone
        for cname, block in g.consumers:
            cw = params.get(f"{cname}.weight")
            if cw is None:
                continue
            cols = keep.to(cw.device).repeat_interleave(block) if cw.dim() == 2 else keep.to(cw.device)
            dead = cw.detach().transpose(0, 1)[~cols]
            if bool((dead != 0).any()):
                problems.append(f"consumer {cname} reads removed channels with non-zero weights")
    return out


def structure_problems(
    model: nn.Module, masks: Mapping[str, torch.Tensor] | None, metadata: Mapping[str, Any] | None
) -> tuple[dict[str, list[str]], list[str]]:
    """Problems per weight parameter and problems of the model as a whole.

    Args:
        model: the model with its weights.
        masks: the masks (None: judge the weights alone).
        metadata: the pruner's metadata / granularity_info (None: only masked weights checked).

    Returns:
        `(per_layer, general)`.
    """
    params = dict(model.named_parameters())
    per: dict[str, list[str]] = {}
    general: list[str] = []
    info = _info(metadata)
    for name, mask in (masks or {}).items():
        if name not in params:
            general.append(f"mask for {name!r} names no parameter of the model")
            continue
        p = params[name]
        if tuple(mask.shape) != tuple(p.shape) or mask.dtype != torch.bool:
            per.setdefault(name, []).append(
                f"mask has shape {tuple(mask.shape)} / {mask.dtype}, expected {tuple(p.shape)} / bool"
            )
            continue
        leaked = int((p.detach()[~mask.to(p.device)] != 0).sum())
        if leaked:
            per.setdefault(name, []).append(f"{leaked} masked weights are non-zero")
    if info is None:
        return per, general
    good_masks = {n: m for n, m in (masks or {}).items() if n in params and tuple(m.shape) == tuple(params[n].shape)}
    for name, spec in (info.get("layers") or {}).items():
        if name not in params:
            general.append(f"metadata names layer {name!r} that the model does not have")
            continue
        if masks is not None and name not in good_masks and name not in per:
            per.setdefault(name, []).append("no mask for a prunable weight")
        per.setdefault(name, []).extend(_row_problems(params[name], good_masks.get(name), spec))
    dense = info.get("dense_layers") or {}
    for module in dense:
        wname = f"{module}.weight" if module else "weight"
        if wname in good_masks and not bool(good_masks[wname].all()):
            per.setdefault(wname, []).append(f"kept dense ({dense[module]}) but masked")
    if info.get("granularity") in ("filter", "channel"):
        for name, problems in _channel_problems(params, good_masks if masks is not None else None, info).items():
            per.setdefault(name, []).extend(problems)
        if masks is not None:
            general.extend(_channel_mask_mismatch(params, good_masks, info))
    recorded = info.get("achieved_sparsity")
    if isinstance(recorded, Mapping):
        recorded = recorded.get("prunable")
    if recorded is not None and masks is not None:
        measured = achieved_sparsity(model, masks)["prunable"]
        if abs(measured - float(recorded)) > _SPARSITY_TOLERANCE:
            general.append(
                f"measured sparsity {measured:.6f} does not match the metadata's achieved sparsity {float(recorded):.6f}"
            )
    return {k: v for k, v in per.items() if v}, general


def _channel_mask_mismatch(
    params: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor], info: Mapping[str, Any]
) -> list[str]:
    """With filter / channel, every mask must be exactly what its removed channels imply."""
    expected = {n: torch.ones(m.shape, dtype=torch.bool, device=m.device) for n, m in masks.items()}
    for raw in info.get("channel_groups") or []:
        g = ChannelGroup.from_dict(raw)
        wname = f"{g.producer}.weight"
        if wname not in masks:
            continue
        keep = masks[wname].reshape(g.channels, -1).any(1)
        expected[wname] &= keep.view(-1, *([1] * (masks[wname].dim() - 1)))
        for name in [f"{g.producer}.bias"] + [f"{bn}.{leaf}" for bn in g.norms for leaf in ("weight", "bias")]:
            if name in expected:
                expected[name] &= keep
        for cname, block in g.consumers:
            cname_w = f"{cname}.weight"
            if cname_w in expected:
                m = expected[cname_w]
                if m.dim() == 4:
                    m &= keep.view(1, -1, 1, 1)
                else:
                    m &= keep.repeat_interleave(block).view(1, -1)
    return [
        f"mask of {n!r} does not follow whole channels ({int((expected[n] != m).sum())} entries differ)"
        for n, m in masks.items()
        if not torch.equal(expected[n], m)
    ]


def verify_structure(
    model: nn.Module, masks: Mapping[str, torch.Tensor] | None, metadata: Mapping[str, Any] | None
) -> list[str]:
    """Every way the model, its masks and its sparsity metadata disagree (empty when all is well).

    Checks: masks name parameters of the right shape; masked weights are zero; each layer has
    the structure of its granularity (see the module docstring); layers kept dense are not
    masked; the measured sparsity over the prunable weights matches the metadata's
    `achieved_sparsity` (when present) to within 1e-6.

    Args:
        model: the model with its weights.
        masks: the masks, or None to judge the weights alone.
        metadata: `CampfirePruner.metadata()` / `granularity_info()`, or a checkpoint meta
            holding it under "sparsity"; None checks the masks only.

    Returns:
        One line per problem, naming the layer.
    """
    per, general = structure_problems(model, masks, metadata)
    return general + [f"{name}: {problem}" for name, problems in per.items() for problem in problems]


def layer_sparsity_table(
    model: nn.Module, masks: Mapping[str, torch.Tensor] | None = None, granularity_info: Mapping[str, Any] | None = None
) -> pd.DataFrame:
    """One row per conv/linear weight, then totals over the prunable weights and over all parameters.

    `granularity` is what the layer was pruned with (`element` where a 1x1 conv or linear
    layer fell back to single weights); `group` says what one group is in that layer (e.g.
    `3x3 kernel`, `8 input channels`, `1 weight`).

    Args:
        model: the model (masks applied).
        masks: the masks, or None.
        granularity_info: `CampfirePruner.granularity_info()` / `metadata()`, or None.

    Returns:
        A DataFrame with columns `TABLE_COLUMNS`; the last two rows are named `__prunable__`
        and `__all__` (all parameters, BatchNorm and biases included).
    """
    info = _info(granularity_info)
    per, general = structure_problems(model, masks, info)
    params = dict(model.named_parameters())
    prunable = set(prunable_weight_names(model, masks))
    specs = (info or {}).get("layers") or {}
    dense = (info or {}).get("dense_layers") or {}
    rows = []
    for layer in conv_linear_layers(model):
        w = params[layer.param].detach()
        nonzero = int((w != 0).sum())
        if layer.param in specs:
            granularity = specs[layer.param].get("granularity", "")
        elif layer.module in dense:
            granularity = "dense"
        else:
            granularity = (
                (info or {}).get("granularity", "") if info and layer.param in prunable else ("dense" if info else "")
            )
        problems = per.get(layer.param, [])
        rows.append(
            {
                "name": layer.param,
                "kind": layer.kind,
                "shape": "x".join(str(s) for s in w.shape),
                "granularity": granularity,
                "group": group_description(specs.get(layer.param), layer.shape),
                "prunable": layer.param in prunable,
                "weights": w.numel(),
                "nonzeros": nonzero,
                "sparsity": 1.0 - nonzero / w.numel() if w.numel() else 0.0,
                "structure_ok": not problems,
                "why": "; ".join(problems),
            }
        )
    others = [f"{n}: {p}" for n, ps in per.items() if n not in {r["name"] for r in rows} for p in ps]
    ok = all(r["structure_ok"] for r in rows) and not general and not others
    why = "; ".join(general + others)
    pr_w = sum(r["weights"] for r in rows if r["prunable"])
    pr_nz = sum(r["nonzeros"] for r in rows if r["prunable"])
    all_w = sum(p.numel() for p in params.values())
    all_nz = sum(int((p.detach() != 0).sum()) for p in params.values())
    for name, w, nz in ((PRUNABLE_TOTAL, pr_w, pr_nz), (ALL_TOTAL, all_w, all_nz)):
        rows.append(
            {
                "name": name,
                "kind": LAYER_TOTAL_KIND,
                "shape": "",
                "granularity": (info or {}).get("granularity", ""),
                "group": "",
                "prunable": name == PRUNABLE_TOTAL,
                "weights": w,
                "nonzeros": nz,
                "sparsity": 1.0 - nz / w if w else 0.0,
                "structure_ok": ok,
                "why": why,
            }
        )
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def eval_forward_with_hooks(model: nn.Module, example: torch.Tensor, handles: list) -> None:
    """One eval-mode forward pass of `example` for the forward hooks behind `handles` (a counting
    probe: BatchNorm statistics untouched), then the model's mode restored and the hooks removed."""
    was_training = model.training
    model.eval()
    try:
        model(example)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
