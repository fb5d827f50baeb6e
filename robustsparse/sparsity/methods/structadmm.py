"""StructADMM: ADMM with structured constraint sets, hard pruning, masked retraining (methods.md 6).

Zhang et al. (arXiv 1807.11091) pose structured pruning as `min f(W) s.t. W_l in S_l` and
solve it with ADMM from a trained network. Here, from the dense parent (`from_dense: true`,
fixed), for the epochs `start_epoch` .. `end_epoch` (the ADMM phase; `end_epoch - start_epoch`
must be a multiple of `structadmm_admm_update_every` = E):

- at `start_epoch`: Z = proj_S(W), U = 0, rho = `structadmm_rho`;
- W-step: training adds the augmented-Lagrangian term sum_l rho/2 ||W_l - Z_l + U_l||^2
  (the scaled dual form, methods.md 6e) to the cross-entropy (`Method.loss_term`);
- every E epochs (an ADMM iteration): Z = proj_S(W + U) (`projections`: keep the groups of the
  largest L2 norm, exact), U = U + W - Z, the primal residual ||W - Z|| and the dual residual
  rho ||Z - Z_prev|| recorded, then rho = min(rho * `structadmm_rho_factor`,
  `structadmm_rho_max`) while iterations remain;
- at `end_epoch`: hard pruning W = proj_S(W): the masks are the projection's support, frozen;
  the remaining epochs retrain with the masks fixed (masked weights and their momentum zeroed
  after every step, as every method).

Constraint sets, on the project's granularities (design.md; uniform per layer, as the paper's
per-layer alpha_l; `allocation: uniform` fixed):

- `element` (the paper's non-structured case): each prunable layer keeps its nearest count of
  weights, the largest |w|.
- `filter`: for each channel group whose producer and consumers are all prunable (the groups
  of Campfire's `filter`; residual streams never), the producer's filters `W[k, :, :, :]`;
  each group keeps the nearest count of filters that Campfire's uniform `filter` keeps at the
  target. At hard pruning a removed filter takes its bias, BatchNorm scale and shift and the
  consumers' input columns with it (the project's `filter`), so the result is the paper's
  filter + channel combination on every layer inside a chain, and compacts physically.
- `channel`: the same groups, the constraint on the consumers' input slices `W[:, c, :, :]`
  (all consumers of a channel together: one group); hard pruning removes whole coupled
  channels as above.
- `column` (the paper's shape-wise sparsity): each prunable layer keeps its nearest count of
  columns `W[:, c, r, s]` (one position in every filter; Campfire's uniform `column` count at
  the target), the columns of the largest L2 norm. Like `element` it is per layer and
  uncoupled, so it does not compact physically (a smaller im2col GEMM, not a smaller network).
- The paper's combinations: `filter` here is already filter + channel (a removed filter takes
  the consumers' input columns with it). Filter + column on one layer has no exact projection
  onto the intersection of the two sets (keeping the largest groups of one kind changes the
  norms of the other), so it is not offered, nor is the paper's progressive variant (one
  structure pruned after the other from the first's result).

Defaults (every value in the metadata): `structadmm_rho` 1.5e-3 (the paper's Caffe release,
every layer); `structadmm_rho_factor` 1.3 (the most common value of the group's PyTorch code);
`structadmm_rho_max` 1.0 (ours: copies cap rho at 1); `structadmm_admm_update_every` 1 epoch
(ours: the paper's ~12 ImageNet epochs per iteration, 9 in the PyTorch code, do not fit the short
runs here; set it for long runs). Scores are L2 norms (`importance: l2`, fixed, methods.md 13.5).
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

import torch
from torch import nn

from robustsparse.errors import CheckpointError
from robustsparse.sparsity.allocation import MaskResult, _consumer_columns, channel_granularity_masks
from robustsparse.sparsity.methods.base import Method, refuse_foreign_settings, setting_error
from robustsparse.sparsity.methods.registry import register
from robustsparse.sparsity.projections import group_rows, project_rows, ungroup_rows
from robustsparse.sparsity.pruner import CampfirePruner
from robustsparse.sparsity.settings import SparsityConfig, is_int, is_number

__all__ = ["STRUCTADMM", "StructAdmmPruner", "Constraint", "resolve_structadmm_settings", "DEFAULTS"]

log = logging.getLogger(__name__)

METHOD = "structadmm"
DEFAULTS: dict[str, Any] = {
    "structadmm_rho": 1.5e-3,
    "structadmm_rho_factor": 1.3,
    "structadmm_rho_max": 1.0,
    "structadmm_admm_update_every": 1,
}
STATE_FORMAT = "robustsparse.structadmm"
# The granularities constrained layer by layer (the others: per channel group, coupled).
PER_LAYER: tuple[str, ...] = ("element", "column")


def resolve_structadmm_settings(cfg: SparsityConfig) -> dict[str, Any]:
    """structadmm's settings checked and completed (defaults filled in); {} for other methods.

    Raises:
        ConfigError: a structadmm setting is given for another method, is out of range, or the
            ADMM phase is not a whole number of iterations (one line each).
    """
    if cfg.method != METHOD:
        refuse_foreign_settings(cfg, METHOD, DEFAULTS)
        return {}
    out = {key: DEFAULTS[key] if getattr(cfg, key) is None else getattr(cfg, key) for key in DEFAULTS}
    rho, factor, cap, every = (out[k] for k in DEFAULTS)
    if not is_number(rho) or rho <= 0:
        raise setting_error("structadmm_rho", rho, "a number > 0 (the initial ADMM penalty rho)")
    if not is_number(factor) or factor < 1:
        raise setting_error(
            "structadmm_rho_factor", factor, "a number >= 1 (rho is multiplied by it every ADMM iteration)"
        )
    if not is_number(cap) or cap < rho:
        raise setting_error("structadmm_rho_max", cap, f"a number >= structadmm_rho = {rho} (the cap of rho)")
    if not is_int(every) or every < 1:
        raise setting_error("structadmm_admm_update_every", every, "an integer >= 1 (epochs per ADMM iteration)")
    start, end = cfg.start_epoch, cfg.end_epoch
    if is_int(start) and is_int(end) and (end <= start or (end - start) % every):
        raise setting_error(
            "end_epoch",
            end,
            f"start_epoch ({start}) plus a positive multiple of structadmm_admm_update_every ({every}) "
            "with method 'structadmm' (the ADMM phase is a whole number of iterations)",
        )
    return {k: float(v) if k != "structadmm_admm_update_every" else int(v) for k, v in out.items()}


class Constraint:
    """One structured set: rows of flat indices into weights, at most `keep` rows non-zero.

    Args:
        name: what it constrains (a layer's weight, or a channel group's producer).
        slices: (parameter name, (groups, entries) LongTensor of flat indices into it): the
            groups' entries in each tensor; row i of every slice together is group i.
        keep: how many groups may stay non-zero.
    """

    def __init__(self, name: str, slices: list[tuple[str, torch.Tensor]], keep: int) -> None:
        self.name = name
        self.slices = slices
        self.keep = int(keep)

    @property
    def groups(self) -> int:
        return int(self.slices[0][1].shape[0])

    def rows(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """The (groups, entries) table of `tensors` over this set's slices."""
        return torch.cat([tensors[p].reshape(-1)[idx.to(tensors[p].device)] for p, idx in self.slices], dim=1)

    def project_into(self, source: dict[str, torch.Tensor], out: dict[str, torch.Tensor]) -> torch.Tensor:
        """Write proj(source) over this set's entries into `out`; returns the kept groups."""
        table, kept = project_rows(self.rows(source), self.keep)
        start = 0
        for p, idx in self.slices:
            width = idx.shape[1]
            flat = out[p].view(-1)
            flat[idx.reshape(-1).to(flat.device)] = table[:, start : start + width].reshape(-1)
            start += width
        return kept


def _flat_positions(param: torch.Tensor) -> torch.Tensor:
    """Each entry's flat index, in the parameter's shape and on its device."""
    return torch.arange(param.numel(), device=param.device).reshape(param.shape)


class StructAdmmPruner(CampfirePruner):
    """A `CampfirePruner` whose masks come from ADMM's projection at `end_epoch` (module docstring).

    Args:
        model, cfg, steps_per_epoch: as `CampfirePruner`.

    Attributes:
        rho: the current penalty; z / u: the auxiliary and (scaled) dual variables per
            constrained weight (None before `start_epoch`); history: one record per ADMM
            iteration (rho used, primal and dual residuals).
    """

    def __init__(self, model: nn.Module, cfg: SparsityConfig, steps_per_epoch: int) -> None:
        super().__init__(model, cfg, steps_per_epoch)
        params = self._params()
        weights = {n: params[n].detach() for n in self._engine.weight_names}
        # the counts per set: those of Campfire's uniform masks at the target (shape-determined)
        self._dry = self._engine.compute(weights, None, cfg.target_sparsity)
        self.constraints = self._constraints(params)
        governed: dict[str, torch.Tensor] = {}
        for c in self.constraints:
            for p, idx in c.slices:
                g = governed.setdefault(p, torch.zeros(params[p].numel(), dtype=torch.bool, device=params[p].device))
                g[idx.reshape(-1)] = True
        self.governed = {p: g.reshape(params[p].shape) for p, g in governed.items()}
        # Every set covers whole weights (a layer's, a producer's filters, a consumer's input
        # slices), so the ADMM terms below need no mask; a partial one would be a bug here.
        partial = [p for p, g in self.governed.items() if not bool(g.all())]
        if partial:
            raise RuntimeError(f"structadmm: constraints cover only part of {', '.join(partial)}")
        self.start_step = cfg.start_epoch * self.steps_per_epoch
        self.every_steps = int(cfg.structadmm_admm_update_every) * self.steps_per_epoch
        self.iterations = (self.plan.end_step - self.start_step) // self.every_steps
        self.rho = float(cfg.structadmm_rho)
        self.z: dict[str, torch.Tensor] | None = None
        self.u: dict[str, torch.Tensor] | None = None
        self.history: list[dict[str, float]] = []
        self.hard_prune_distance: float | None = None

    def _constraints(self, params: dict[str, torch.Tensor]) -> list[Constraint]:
        g = self.cfg.granularity
        out = []
        if g in PER_LAYER:
            for layer in self._engine.layers:
                index = group_rows(_flat_positions(params[layer.param]), g)
                # the groups Campfire's uniform masks keep at the target (shape-determined)
                keep = int(self._dry.masks[layer.param].reshape(-1)[index].any(1).sum())
                out.append(Constraint(layer.param, [(layer.param, index)], keep))
            return out
        for grp in self._engine.groups:
            keep = grp.channels - int(self._dry.pruned_channels.get(grp.producer, 0))
            if g == "filter":
                name = f"{grp.producer}.weight"
                slices = [(name, group_rows(_flat_positions(params[name]), "filter"))]
            else:
                slices = []
                for consumer, block in grp.consumers:
                    name = f"{consumer}.weight"
                    slices.append((name, _consumer_columns(_flat_positions(params[name]), grp.channels, block)))
            out.append(Constraint(grp.producer, slices, keep))
        return out

    # ------------------------------------------------------------------ ADMM
    @property
    def active(self) -> bool:
        """True during the ADMM phase (Z and U exist, masks not yet frozen)."""
        return self.z is not None and not self.frozen

    def _weights(self) -> dict[str, torch.Tensor]:
        params = self._params()
        return {p: params[p].detach() for p in self.governed}

    @torch.no_grad()
    def project(self, source: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """proj_S(source) on the constrained entries (zero elsewhere), per constrained weight."""
        return self._project_with_support(source)[0]

    def _project_with_support(
        self, source: dict[str, torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """`project(source)` and each set's kept groups (bool, by constraint name)."""
        # contiguous (not zeros_like, which keeps e.g. channels_last): written through a flat view
        out = {p: torch.zeros(t.shape, dtype=t.dtype, device=t.device) for p, t in source.items()}
        kept = {c.name: c.project_into(source, out) for c in self.constraints}
        return out, kept

    def _residual(self, a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
        total = sum(float((a[p] - b[p]).double().square().sum()) for p in a)
        return math.sqrt(total)

    def primal_residual(self) -> float | None:
        """||W - Z|| over the constrained entries now (None outside the ADMM phase)."""
        return None if self.z is None else self._residual(self._weights(), self.z)

    @torch.no_grad()
    def _start(self) -> None:
        self.z = self.project(self._weights())
        self.u = {p: torch.zeros_like(t) for p, t in self.z.items()}
        log.info("structadmm: ADMM started (rho %.3g, %d iterations)", self.rho, self.iterations)

    @torch.no_grad()
    def admm_update(self) -> None:
        """One ADMM iteration's Z- and U-steps, then the rho schedule."""
        w = self._weights()
        before = self.z
        self.z = self.project({p: w[p] + self.u[p] for p in w})
        self.u = {p: self.u[p] + (w[p] - self.z[p]) for p in w}
        record = {
            "rho": self.rho,
            "primal_residual": self._residual(w, self.z),
            "dual_residual": self.rho * self._residual(self.z, before),
        }
        self.history.append(record)
        if len(self.history) < self.iterations:
            self.rho = min(self.rho * float(self.cfg.structadmm_rho_factor), float(self.cfg.structadmm_rho_max))
        log.debug("structadmm iteration %d: %s", len(self.history), record)

    def loss_term(self) -> torch.Tensor | None:
        """rho/2 sum_l ||W_l - Z_l + U_l||^2 over the constrained entries (None outside the ADMM phase)."""
        if not self.active or not self.governed:
            return None
        params = self._params()
        terms = [(params[p] - self.z[p] + self.u[p]).square().sum() for p in self.governed]
        return 0.5 * self.rho * torch.stack(terms).sum()

    # ------------------------------------------------------------------ the training-loop calls
    def step(self, global_step: int, optimizer: torch.optim.Optimizer | None = None) -> bool:
        """Start ADMM at `start_epoch`, iterate every E epochs, hard-prune at `end_epoch`."""
        if self.frozen:
            return False
        step = int(global_step)
        if self.z is None and step >= self.start_step:
            self._start()
        while self.z is not None and len(self.history) < self.iterations:
            due = self.start_step + (len(self.history) + 1) * self.every_steps
            if step < due:
                break
            self.admm_update()
        if step >= self.plan.end_step:
            self._hard_prune(optimizer)
            return True
        return False

    @torch.no_grad()
    def _hard_prune(self, optimizer: torch.optim.Optimizer | None) -> None:
        """W = proj_S(W): the masks are the projection's support (with the coupled parameters)."""
        params = self._params()
        w = self._weights()
        projected, kept = self._project_with_support(w)
        if self.cfg.granularity in PER_LAYER:
            masks = dict(self.masks)
            for c in self.constraints:
                table = kept[c.name][:, None].expand(c.groups, c.slices[0][1].shape[1])
                shape = params[c.name].shape
                masks[c.name] = ungroup_rows(table, self.cfg.granularity, shape).to(params[c.name].device)
            result = MaskResult(masks, dict(self._dry.specs), {}, {})
        else:
            # scores 1 for the projection's kept channels and 0 for the others: the uniform
            # counts are the projection's, so exactly its dropped channels go (with coupling)
            scores = {name: k.double() for name, k in kept.items()}
            weights = {n: params[n].detach() for n in self._engine.weight_names}
            result = channel_granularity_masks(
                self._engine.layers,
                self._engine.groups,
                weights,
                self._engine.param_names,
                None,
                self.cfg,
                self.cfg.target_sparsity,
                channel_scores=scores,
            )
        self.hard_prune_distance = self._residual(w, projected)
        self.masks, self._result, self._pairs = result.masks, result, None
        self._last_update = self.plan.end_step
        self.current_target = float(self.cfg.target_sparsity)
        self.z = self.u = None  # not needed any more: the masks hold the structure
        self.apply_(optimizer)
        log.info(
            "structadmm: hard-pruned at step %d (achieved %.4f, final primal residual %s)",
            self.plan.end_step,
            self.achieved()["prunable"],
            self.history[-1]["primal_residual"] if self.history else None,
        )

    # ------------------------------------------------------------------ reporting and resume
    def metadata(self) -> dict[str, Any]:
        """Campfire's metadata plus the ADMM settings, the rho schedule and the residuals."""
        cfg = self.cfg
        return {
            **super().metadata(),
            "scores": "L2 norm of each group (exact Euclidean projection onto the structured set)",
            "structadmm": {
                "phase": f"ADMM from epoch {cfg.start_epoch} to {cfg.end_epoch}, then hard pruning and "
                "masked retraining",
                "rho_initial": float(cfg.structadmm_rho),
                "rho_factor": float(cfg.structadmm_rho_factor),
                "rho_max": float(cfg.structadmm_rho_max),
                "rho_now": self.rho,
                "update_every_epochs": int(cfg.structadmm_admm_update_every),
                "iterations": self.iterations,
                "iterations_done": len(self.history),
                "history": list(self.history),
                "final_primal_residual": self.history[-1]["primal_residual"] if self.history else None,
                "hard_prune_distance": self.hard_prune_distance,
                "constraint": {
                    "element": "per layer: at most keep non-zero weights",
                    "column": "per layer: at most keep non-zero columns W[:, c, r, s]",
                    "filter": "per channel group: at most keep non-zero producer filters",
                    "channel": "per channel group: at most keep non-zero input-channel slices over its consumers",
                }[cfg.granularity],
                "kept_groups": {c.name: c.keep for c in self.constraints},
                "groups": {c.name: c.groups for c in self.constraints},
            },
        }

    def state_dict(self) -> dict[str, Any]:
        """Campfire's state plus Z, U, rho and the iteration records."""

        def cpu(d: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor] | None:
            return None if d is None else {k: v.detach().cpu().clone() for k, v in d.items()}

        return {
            **super().state_dict(),
            METHOD: {
                "format": STATE_FORMAT,
                "z": cpu(self.z),
                "u": cpu(self.u),
                "rho": float(self.rho),
                "record": json.dumps({"history": self.history, "hard_prune_distance": self.hard_prune_distance}),
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()`."""
        super().load_state_dict(state)
        extra = state.get(METHOD)
        if not isinstance(extra, dict) or extra.get("format") != STATE_FORMAT:
            raise CheckpointError(
                "pruner state has no structadmm part; resume only from a state saved by StructAdmmPruner"
            )
        params = self._params()

        def load(d: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor] | None:
            if d is None:
                return None
            if set(d) != set(self.governed):
                raise CheckpointError("pruner state's ADMM variables name other weights; it belongs to another model")
            return {k: v.to(params[k].device).clone() for k, v in d.items()}

        self.z, self.u = load(extra["z"]), load(extra["u"])
        self.rho = float(extra["rho"])
        record = json.loads(extra["record"])
        self.history = list(record["history"])
        self.hard_prune_distance = record["hard_prune_distance"]


def _build(model: nn.Module, cfg: SparsityConfig, steps_per_epoch: int, seed: int) -> StructAdmmPruner:
    del seed  # projections of the weights: nothing random
    return StructAdmmPruner(model, cfg, steps_per_epoch)


STRUCTADMM = register(
    Method(
        name=METHOD,
        description="ADMM towards a structured set (exact projections, rising rho), then hard pruning "
        "and masked retraining (StructADMM)",
        when="after_training",
        granularities=("element", "column", "filter", "channel"),
        build_pruner=_build,
        resolve_settings=resolve_structadmm_settings,
        fixed_settings={
            "from_dense": True,
            "allocation": "uniform",
            "importance": "l2",
            "allow_regrowth": False,
            "initial_sparsity": 0.0,
            "schedule": "one_shot",
        },
        loss_term=lambda pruner: pruner.loss_term(),
    )
)
