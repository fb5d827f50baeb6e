"""Drop Pruning: stochastic iterative prune-retrain (Jia et al., arXiv 1812.02035; methods.md section 2).

Starting from the trained dense parent (`from_dense: true`, fixed), every update point of the
schedule between `start_epoch` and `end_epoch` is a pruning step, and the training between two
points is the retraining; the masks are frozen at `end_epoch` for the final retrain. At a
pruning step, in every prunable layer, with K its kept groups and P its pruned ones:

- the candidates C are the r |K| kept groups of smallest current magnitude (`importance`);
- drop away: each candidate is pruned with probability p;
- drop back: each pruned group is restored with probability q; a revived weight restarts from
  zero or from its value before it was pruned (`drop_pruning_revive`), with zero momentum,
  and is trained like any kept weight from then on.

The expected kept count is E|K'| = |K| (1 - p r) + q |P| (methods.md's recursion). The schedule
(cubic by default) gives the target of the step, turned into a per-layer count K* exactly as
Campfire would count it (the same granularity, allocation and rounding); r is solved from the
recursion so that E|K'| = K* (r = (|K| - K* + q |P|) / (p |K|), at most 1, where p then rises
to what the step needs). With `drop_pruning_candidate_fraction` given, r is fixed and p is
solved instead (r rising where even p = 1 falls short). A realised count below K*
(overshooting the schedule) is corrected at once by restoring the pruned groups of largest
value before pruning. The last step (at `end_epoch`) draws nothing: it is a deterministic
top-k correction to exactly K* (the weakest kept groups by current magnitude go, or the
strongest pruned ones by value before pruning come back), so the final sparsity is Campfire's
nearest achievable value and no group is revived just as the masks freeze (it would enter the
final retrain at its restart value without ever being judged).

The paper's p, q, r, retrain length and revival rule are not known (methods.md: "not
retrievable"); the defaults are a reconstruction: p = 0.5 (the dropout analogy the paper
draws; half the candidates go, so twice as many weak groups as needed are at risk), q = 0.01
(q |P| grows with sparsity: at 90% it already brings back a tenth of |K| per step, which must
be dropped again, so a larger q turns most kept groups into candidates; measured on digits,
q = 0.05 made r saturate at 1 at 90%), r solved per step, revival from zero.

Randomness: one uniform draw per group per layer at every step from a generator seeded by a
hash of (the model's seed, the step), never by the global RNG or by how many steps ran in this
process, so the masks depend on the seed only and a resumed run draws what the straight run
drew. The values before pruning live in the pruner's shadow copy (saved with its state).

Granularities: groups are the rows of the granularity's view: `element` (one weight), `row`
and `kernel` (whole kernel rows / kernels; 1x1 convs and linear layers as
`pointwise_grouping` says), with `uniform` or `global` allocation. Not supported (refused
with the allowed values): the balanced granularities (window, window+kernel, n:m), where a
drop would have to be paired with a drop back inside the same kernel to keep the balance, and
the channel ones (filter, channel), where one channel couples several layers (and its
BatchNorm scale: a channel revived from zero has scale 0, which blocks every gradient to its
filter, so it would not really come back) and the counts come from a joint allocation; both
would need a step of their own, not written yet.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from robustsparse.sparsity._math import derived_seed, round_half_up
from robustsparse.sparsity.allocation import MaskResult
from robustsparse.sparsity.granularity import layer_plan
from robustsparse.sparsity.importance import row_scores
from robustsparse.sparsity.masks import zero_masked_state_
from robustsparse.sparsity.methods.base import Method, refuse_foreign_settings, setting_error
from robustsparse.sparsity.methods.registry import register
from robustsparse.sparsity.pruner import CampfirePruner
from robustsparse.sparsity.schedule import last_update_step
from robustsparse.sparsity.settings import SparsityConfig

__all__ = [
    "DROP_PRUNING",
    "DropPruningPruner",
    "drop_pruning_seed",
    "resolve_drop_pruning_settings",
    "DEFAULT_AWAY_PROB",
    "DEFAULT_BACK_PROB",
    "DEFAULT_REVIVE",
]

METHOD = "drop_pruning"
GRANULARITIES = ("element", "row", "kernel")
DEFAULT_AWAY_PROB = 0.5
DEFAULT_BACK_PROB = 0.01
DEFAULT_REVIVE = "zero"
REVIVE_VALUES = ("zero", "previous")
_SETTINGS = (
    "drop_pruning_away_prob",
    "drop_pruning_back_prob",
    "drop_pruning_candidate_fraction",
    "drop_pruning_revive",
)
_HISTORY = "drop_pruning_steps"


def _is_probability(value: Any, low_open: bool) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return (0.0 < value <= 1.0) if low_open else (0.0 <= value <= 1.0)


def resolve_drop_pruning_settings(cfg: SparsityConfig) -> dict[str, Any]:
    """drop_pruning's settings checked and completed (defaults filled in); {} for other methods.

    Raises:
        ConfigError: a setting is given for another method, is out of range, or both the
            drop-away probability and the candidate fraction are given (one line each).
    """
    if cfg.method != METHOD:
        refuse_foreign_settings(cfg, METHOD, _SETTINGS)
        return {}
    p, q = cfg.drop_pruning_away_prob, cfg.drop_pruning_back_prob
    r, revive = cfg.drop_pruning_candidate_fraction, cfg.drop_pruning_revive
    if p is not None and not _is_probability(p, low_open=True):
        raise setting_error("drop_pruning_away_prob", p, "null or a probability in (0, 1]")
    if q is not None and not _is_probability(q, low_open=False):
        raise setting_error("drop_pruning_back_prob", q, "null or a probability in [0, 1]")
    if r is not None and not _is_probability(r, low_open=True):
        raise setting_error("drop_pruning_candidate_fraction", r, "null or a fraction in (0, 1]")
    if p is not None and r is not None:
        raise setting_error(
            "drop_pruning_away_prob",
            p,
            "null when drop_pruning_candidate_fraction is set (one of the two is solved at every step "
            "so the expected kept count meets the schedule)",
        )
    if revive is not None and revive not in REVIVE_VALUES:
        raise setting_error("drop_pruning_revive", revive, "null or one of " + ", ".join(REVIVE_VALUES))
    return {
        "drop_pruning_away_prob": DEFAULT_AWAY_PROB if p is None and r is None else p,
        "drop_pruning_back_prob": DEFAULT_BACK_PROB if q is None else q,
        "drop_pruning_candidate_fraction": r,
        "drop_pruning_revive": DEFAULT_REVIVE if revive is None else revive,
    }


def drop_pruning_seed(seed: int, step: int) -> int:
    """The generator seed of the pruning step at `step` (optimizer steps) for a model's seed."""
    return derived_seed("robustsparse.drop_pruning", seed, step)


def _lowest(scores: torch.Tensor, among: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of the `count` lowest `scores` where `among` (ties: the lower index)."""
    masked = torch.where(among, scores, torch.full_like(scores, float("inf")))
    return torch.argsort(masked, stable=True)[: max(0, count)]


def _highest(scores: torch.Tensor, among: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of the `count` highest `scores` where `among` (ties: the lower index)."""
    masked = torch.where(among, scores, torch.full_like(scores, float("-inf")))
    return torch.argsort(masked, descending=True, stable=True)[: max(0, count)]


class DropPruningPruner(CampfirePruner):
    """A `CampfirePruner` whose update points are Drop Pruning's stochastic steps.

    Args:
        model, cfg, steps_per_epoch: as `CampfirePruner`.
        seed: the model's seed; every draw follows from it and the step.
    """

    def __init__(self, model: nn.Module, cfg: SparsityConfig, steps_per_epoch: int, seed: int) -> None:
        self.seed = int(seed)
        self._point: int | None = None
        super().__init__(model, cfg, steps_per_epoch)

    def step(self, global_step: int, optimizer: torch.optim.Optimizer | None = None) -> bool:
        """As `CampfirePruner.step`; the update point is kept for the step's seed."""
        self._point = last_update_step(int(global_step), self.plan)
        return super().step(global_step, optimizer)

    @torch.no_grad()
    def _update(self, target: float, optimizer: torch.optim.Optimizer | None) -> bool:
        result = self._drop_step(int(self._point), target, optimizer)
        changed = any(not torch.equal(result.masks[n], self.masks[n]) for n in self.masks)
        self.masks = result.masks
        self._result = result
        self._pairs = None
        self.apply_(optimizer)  # the dropped weights and their optimizer state become zero
        return changed

    def _probabilities(self, kept: int, pruned: int, wanted: int) -> tuple[float, float]:
        """(p, r) of one layer's step so that E|K'| = |K| (1 - p r) + q |P| equals `wanted`."""
        cfg = self.cfg
        need = kept - wanted + cfg.drop_pruning_back_prob * pruned  # expected drop-aways needed
        if kept == 0 or need <= 0:
            return 0.0, 0.0
        # The configured one of p and r stays, the other is solved; where it would exceed 1
        # the configured one rises too (to all kept groups dropped, at worst).
        if cfg.drop_pruning_candidate_fraction is not None:
            r = float(cfg.drop_pruning_candidate_fraction)
            p = need / (r * kept)
            return (p, r) if p <= 1.0 else (1.0, min(1.0, need / kept))
        p = float(cfg.drop_pruning_away_prob)
        r = need / (p * kept)
        return (p, r) if r <= 1.0 else (min(1.0, need / kept), 1.0)

    def _drop_step(self, point: int, target: float, optimizer: torch.optim.Optimizer | None) -> MaskResult:
        """One pruning step at update point `point` towards `target` (see the module docstring)."""
        cfg = self.cfg
        final = point >= self.plan.end_step
        params = self._params()
        scored = self._scored_weights(params)
        # Campfire's masks at this target fix each layer's kept count (granularity, allocation, rounding).
        reference = self._engine.compute(scored, None, target)
        generator = torch.Generator().manual_seed(drop_pruning_seed(self.seed, point))
        result = MaskResult(specs=reference.specs)
        # counts of groups (weights for element), summed over the layers
        totals = dict.fromkeys(("kept_before", "candidates", "dropped_away", "dropped_back", "corrected"), 0)
        kept_after = 0
        for info in self._engine.layers:
            name = info.param
            view = layer_plan(info, cfg).view
            w = params[name].detach()
            mask = self.masks[name].to(w.device)
            shadow = self._shadow.get(name)
            shadow = torch.zeros_like(w) if shadow is None else shadow.to(w.device)
            valid = view.valid(w.device)
            kept = (view.rows(mask, pad=False) & valid).any(dim=1).cpu()
            goal = int((view.rows(reference.masks[name].to(w.device), pad=False) & valid).any(dim=1).sum())
            now = row_scores(view.rows(scored[name]), cfg.importance).cpu()  # kept: current magnitude
            before = row_scores(view.rows(shadow), cfg.importance).cpu()  # pruned: value before pruning
            n_kept, n_pruned = int(kept.sum()), int((~kept).sum())
            # The last step draws nothing: the correction below makes it Campfire's count by
            # magnitude, so no group is revived just as the masks freeze (it would enter the
            # final retrain at its restart value, judged by no step).
            p, r = (0.0, 0.0) if final else self._probabilities(n_kept, n_pruned, goal)
            q = 0.0 if final else cfg.drop_pruning_back_prob
            draw = torch.rand(kept.numel(), generator=generator)
            candidates = torch.zeros_like(kept)
            candidates[_lowest(now, kept, round_half_up(r * n_kept))] = True
            away = candidates & (draw < p)
            back = ~kept & (draw < q)
            new = (kept & ~away) | back
            count = int(new.sum())
            if count < goal:  # overshoot: the strongest pruned groups (values before pruning) come back
                restore = torch.where(kept, now, before)
                new[_highest(restore, ~new, goal - count)] = True
            elif final and count > goal:  # last step: the weakest kept groups go (no revived ones here)
                new[_lowest(now, new, count - goal)] = False
            totals["kept_before"] += n_kept
            totals["candidates"] += int(candidates.sum())
            totals["dropped_away"] += int(away.sum())
            totals["dropped_back"] += int(back.sum())
            totals["corrected"] += int(new.sum()) - count
            kept_after += int(new.sum())
            new_mask = view.unrows(valid & new.to(w.device)[:, None]).reshape(w.shape)
            self._transition(name, params[name], mask, new_mask, shadow, optimizer)
            result.masks[name] = new_mask
        history = list(self._result.notes.get(_HISTORY, []))
        history.append({"step": point, "target": float(target), **totals, "kept_after": kept_after})
        result.notes[_HISTORY] = history
        return result

    def _transition(
        self,
        name: str,
        param: torch.Tensor,
        old: torch.Tensor,
        new: torch.Tensor,
        shadow: torch.Tensor,
        optimizer: torch.optim.Optimizer | None,
    ) -> None:
        """Record the values of newly pruned weights; restart the revived ones as configured.

        A revived weight starts exactly from 0 or its value before pruning, with no optimizer
        state: the optimizer step just before this update wrote into it while it was pruned.
        """
        dropped, revived = old & ~new, ~old & new
        shadow = torch.where(dropped, param.detach(), shadow)
        start = shadow if self.cfg.drop_pruning_revive == "previous" else torch.zeros_like(shadow)
        param.copy_(torch.where(revived, start, param.detach()))
        if optimizer is not None:
            zero_masked_state_(optimizer, [(param, revived)])
        self._shadow[name] = torch.where(revived, torch.zeros_like(shadow), shadow)

    def metadata(self) -> dict[str, Any]:
        """Campfire's metadata plus the drop probabilities, the revival rule and every step's counts."""
        cfg = self.cfg
        return {
            **super().metadata(),
            "drop_pruning": {
                "away_prob": cfg.drop_pruning_away_prob,
                "back_prob": cfg.drop_pruning_back_prob,
                "candidate_fraction": cfg.drop_pruning_candidate_fraction,
                "solved": "candidate_fraction" if cfg.drop_pruning_candidate_fraction is None else "away_prob",
                "revive": cfg.drop_pruning_revive,
                "rng": "torch.Generator per step, seeded by sha256(model seed, step); one uniform draw per group",
                "steps": list(self._result.notes.get(_HISTORY, [])),
            },
        }


def _build(model: nn.Module, cfg: SparsityConfig, steps_per_epoch: int, seed: int) -> DropPruningPruner:
    return DropPruningPruner(model, cfg, steps_per_epoch, seed)


DROP_PRUNING = register(
    Method(
        name=METHOD,
        description="iterative prune-retrain from the dense model: drop away weak weights and drop back "
        "pruned ones at random (Drop Pruning)",
        when="after_training",
        granularities=GRANULARITIES,
        build_pruner=_build,
        resolve_settings=resolve_drop_pruning_settings,
        fixed_settings={"from_dense": True, "allow_regrowth": False},
    )
)
