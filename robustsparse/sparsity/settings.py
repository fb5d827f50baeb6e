"""The `sparsity:` section of an experiment: one frozen, typed `SparsityConfig`.

The config loader checks types and `Literal` vocabularies generically from the type hints;
`__post_init__` checks what types cannot say (ranges and cross-field rules) and raises
`ConfigError` with one line naming the key, the bad value and what is allowed.

Defaults follow `docs/methods.md` section 1 (Campfire): the paper's own choices could not be
verified, so each unknown is a setting with the proposed default, and every setting used is
written into the pruner's metadata.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

from reports.contract import LOWRANK_GRANULARITY
from robustsparse.errors import ConfigError
from robustsparse.sparsity._math import keep_count

__all__ = [
    "SparsityConfig",
    "Granularity",
    "GRANULARITIES",
    "BALANCED_GRANULARITIES",
    "CHANNEL_GRANULARITIES",
    "LOWRANK",
    "ALL_GRANULARITIES",
    "settings_to_dict",
    "nm_keep",
    "is_number",
    "is_int",
    "setting_error",
]

Granularity = Literal[
    "element", "row", "kernel", "column", "window", "window+kernel", "filter", "channel", "n:m", "lowrank"
]
# The mask granularities: what is kept or removed as a whole.
GRANULARITIES: tuple[str, ...] = (
    "element",
    "row",
    "kernel",
    "column",
    "window",
    "window+kernel",
    "filter",
    "channel",
    "n:m",
)
# Not a mask: convolutions replaced by low-rank (Tucker-2) factors (haloc). Kept out of
# GRANULARITIES, which every mask method and test iterates, so no mask method accepts it.
LOWRANK = LOWRANK_GRANULARITY  # reports.contract holds the name (reports tell low-rank models apart)
ALL_GRANULARITIES: tuple[str, ...] = (*GRANULARITIES, LOWRANK)
# Every group keeps the same number of weights: a global ranking would break that balance.
BALANCED_GRANULARITIES: tuple[str, ...] = ("window", "window+kernel", "n:m")
# Whole channels (a producer's filter together with its consumers' input columns).
CHANNEL_GRANULARITIES: tuple[str, ...] = ("filter", "channel")


def setting_error(key: str, value: Any, expected: str) -> ConfigError:
    """The one-line error of a setting `sparsity.<key>` that is not allowed."""
    return ConfigError(f"config error: sparsity.{key} = {value!r} is not allowed; expected {expected}")


def _require(condition: bool, key: str, value: Any, expected: str) -> None:
    if not condition:
        raise setting_error(key, value, expected)


@dataclass(frozen=True)
class SparsityConfig:
    """How one sparse model is pruned (Campfire: gradual structured pruning, masks frozen at the end).

    Attributes:
        method: `none` (dense) or a registered method (`robustsparse list methods`:
            `campfire` gradual magnitude pruning with frozen masks, `random` random masks
            fixed before training, ...). A method may decide some settings itself (e.g.
            `random` prunes one-shot at step 0): they are filled in here, so ids, metadata
            and the written config show what is used.
        granularity: the group that is kept or removed as a whole (design.md, Granularities):
            `element` one weight; `row` W[k,c,r,:]; `kernel` W[k,c,:,:]; `column` W[:,c,r,s]
            (filter shape: the same position in every filter of a layer, a column of the GEMM
            matrix W.view(K, -1), StructADMM's shape-wise group); `window` the same
            number of weights kept inside every kernel (balanced); `window+kernel` kernel
            pruning, then window pruning of the kept kernels; `filter` one output channel
            (with its BatchNorm scale/shift, its bias and the consumers' input columns);
            `channel` one input channel (the same coupled set, ranked by the consumers'
            columns); `n:m` n of every m consecutive weights along the input channels;
            `lowrank` (haloc only) no mask: the k x k convs become Tucker-2 factors.
        target_sparsity: final fraction of zeros over the prunable weights, in [0, 1).
            Balanced granularities reach the nearest achievable value (e.g. `window` on 3x3
            at 0.7 keeps 3 of 9 weights: 0.667); the pruner's metadata states it.
        importance: group score, `l1` (sum of |w|, Mao et al.) or `l2` (Euclidean norm).
        allocation: `uniform` (the same target in every prunable layer) or `global` (one
            ranking of all groups of all layers). For `global` a group's score is its norm per
            weight divided by the mean of that layer's group scores (pruned groups count as
            0), so a layer's scale does not decide how much of it goes: groups are compared
            with their own layer's typical group. `global` is not allowed for the balanced
            granularities (window, window+kernel, n:m).
        max_layer_sparsity: for `global` allocation, the most any one layer may lose (its
            fraction of zeros, coupled filter / channel columns included); must be at least
            `target_sparsity`. 0.95 by default: a global ranking may thin a layer far more
            than the target, but never nearly empty it. `uniform` ignores it.
        global_ranking: how `global` allocation compares groups of different layers:
            `layer_normalised` (the default, above) or `raw` (scores per weight compared as
            they are, no layer normalisation and no group protected per layer: the papers'
            single global threshold, which `snip` and `synflow` fix; `max_layer_sparsity`
            still caps every layer, and filter / channel still keep each group's best channel).
        synflow_rounds: `synflow` only: pruning rounds at initialisation; round k of R reaches
            density (1 - target_sparsity) ** (k / R) (the exponential schedule). 100 as the paper.
        keep_first_conv_dense: never prune the first convolution (the stem).
        keep_last_linear_dense: never prune the last linear layer (the classifier).
        keep_dense: more layers never pruned, as fnmatch patterns on module names
            (e.g. `net.layer4.*`, `*.downsample.0`); each must match a conv or linear layer.
        schedule: `cubic` (Zhu & Gupta), `linear` or `one_shot`; the cumulative target
            moves from `initial_sparsity` at `start_epoch` to `target_sparsity` at `end_epoch`.
        initial_sparsity: the target at `start_epoch` (0 for pruning from dense).
        start_epoch: first mask update, in epochs of training completed.
        end_epoch: last mask update, in epochs of training completed; the masks are frozen
            from then on (Campfire). About a third of training, as the paper's 30 of 90 epochs.
        update_every: masks are recomputed every `update_every` units between start and end.
        update_unit: the unit of `update_every`: optimizer `steps` or `epochs`.
        allow_regrowth: before the freeze, may pruned weights come back? False: scores come
            from the masked weights and masks only gain zeros. True: scores come from dense
            weights (pruned weights keep accumulating their updates in a shadow copy, with
            their optimizer state kept so they move as kept weights would, and come back with
            that value when they win; at the freeze their state is cleared).
        pointwise_grouping: how `row`, `kernel`, `window` and `window+kernel` group 1x1
            convolutions and linear layers, where a kernel (and a spatial window) is a single
            weight: `channel_block` (a group is `pointwise_block` consecutive input channels of
            one filter, pruned whole or, for window, balanced inside) or `element`
            (unstructured pruning of those layers at the same target, recorded as `element`).
        pointwise_block: the group size along the input channels for `channel_block`.
        window_kernel_split: for `window+kernel`, the share of the target (in log-density,
            (1-s) = (1-s_kernel)(1-s_window)) given to kernel pruning: 0 all window,
            1 all kernel, 0.5 an even split. The window keep count is rounded to an integer
            and the kernel part makes up the rest, so the overall target is met.
        n: for `n:m`, weights kept in every group of `m`. Derived from `target_sparsity`
            (nearest achievable) when left out; when given it must agree with it.
        m: for `n:m`, the group size along the input channels.
        lr_mode: learning-rate configuration while pruning (`lr_modes`; the trainer applies
            it): `standard` schedule unchanged, `hold` the rate held at its post-warm-up value
            while pruning, `rewind` the schedule restarted when the masks freeze. `hold` and
            `rewind` need start_epoch < end_epoch < train.epochs, and a mode that draws the
            same curve as a simpler one is refused when the experiment is loaded.
        from_dense: start from the dense parent checkpoint (True) or from scratch (the
            trainer implements it).
        psconv_kept, psconv_period, psconv_dense_kernel: `psconv`'s weights kept per 3x3
            kernel (4: 2x2 corner squares, 2: horizontal pairs; derived from target_sparsity
            when left out), its period P (8) and whether one kernel in every P stays dense
            (true, as the paper's code); null for other methods (methods/psconv.py).
        pconv_pattern_size, pconv_library_size, pconv_other_layers: `pconv`'s weights kept
            per 3x3 kernel pattern, centre included (4; an integer in [2, 8]), the number of
            patterns in the library chosen from the weights (8; at most C(8, size - 1)), and what
            happens to prunable layers that are not 3x3 convs (`element`: magnitude pruning at
            the same target, the default; `dense`: kept dense); null for other methods
            (methods/pconv.py).
        drop_pruning_away_prob, drop_pruning_back_prob, drop_pruning_candidate_fraction,
        drop_pruning_revive: `drop_pruning`'s probability p that a candidate (one of the
            r |K| weakest kept groups of a layer) is dropped away at a pruning step (0.5), the
            probability q that a pruned group is dropped back (0.01), the candidate fraction r
            (derived at every step so the expected kept count meets the schedule; given, p is
            derived instead, so at most one of p and r may be set) and what a revived weight
            restarts from, `zero` or its `previous` value (`zero`); the paper's values are not
            known, these are reconstructions; null for other methods (methods/drop_pruning.py).
        hybrid_examples, hybrid_ratios, hybrid_tolerance, hybrid_channel_multiple: `hybrid`'s
            sensitivity test: training examples it is measured on (512, a seeded subset of the
            training split), the grid of channel pruning ratios tried per layer (0.1, ..., 0.9),
            the largest accuracy drop a layer's chosen ratio may cost (0.01) and the multiple
            its kept channels are rounded up to (1); null for other methods (methods/hybrid.py).
        npn_hidden, npn_lambda, npn_gate, npn_lr: `npn`'s pruner network (one MLP per filter
            group with `npn_hidden` hidden units, 16), the weight lambda of its penalty
            lambda * (share of open gates - share the schedule allows)^2 (5.0), the gate
            (`straight_through`: hard 0/1 gates forward, sigmoid gradient backward; `soft`:
            sigmoid gates) and the pruner network's Adam learning rate (0.01); null for other
            methods (methods/npn.py).
        dnr_prune_rate, dnr_anneal: `dnr`'s prune rate p0, the fraction of each layer's kept
            weights (channels, for `channel`) removed and regrown at the first rewiring (0.5, as
            sparse momentum; the DNR paper's value is not known), and how it is annealed to the
            freeze at `end_epoch` (`cosine` to 0, as sparse momentum and DNR; `linear` to 0;
            `none`: constant); null for other methods (methods/dnr.py).
        dst_threshold, dst_alpha, dst_alpha_control, dst_alpha_gain, dst_alpha_proportional,
        dst_lr, dst_momentum: `dst`'s trainable thresholds, one per filter (`filter`, the paper's) or per layer
            (`layer`); the strength alpha of its regulariser alpha * sum(exp(-t)) (5e-4, the
            paper's MNIST value; with feedback, where alpha starts); how alpha reaches
            `target_sparsity`: `feedback` (the default: a proportional-integral rule on log alpha
            driven by scheduled target - mask sparsity after every step, with integral gain
            `dst_alpha_gain` 1.0 and proportional gain `dst_alpha_proportional` 60) or `fixed`
            (the paper: sparsity emerges, the target is only recorded); and the thresholds' SGD
            learning rate (0.01) and momentum (0; the paper's 0.9 overshoots the target); null for
            other methods (methods/dst.py).
        structadmm_rho, structadmm_rho_factor, structadmm_rho_max, structadmm_admm_update_every:
            `structadmm`'s initial ADMM penalty rho (1.5e-3, the paper's), the factor rho is
            multiplied by after every ADMM iteration (1.3) up to its cap (1.0), and the epochs per
            ADMM iteration E (1); the ADMM phase runs from `start_epoch` to `end_epoch` (a whole
            number of iterations), then hard pruning freezes the masks; null for other methods
            (methods/structadmm.py).
        haloc_rank_multiple, haloc_target, haloc_cost, haloc_cost_table, haloc_beta,
        haloc_tau_start, haloc_tau_end, haloc_fm_lambda_start, haloc_fm_lambda_end,
        haloc_alpha_lr, haloc_holdout_examples, haloc_alpha_batch, haloc_enforce_target:
            `haloc`'s rank search (methods/haloc.py, methods.md 15): rank candidates are
            multiples of g (8); the cost target as a fraction of the compressed layers' dense
            cost (derived as 1 - target_sparsity when left out, and must agree when given);
            the cost, `macs` (the formula) or `latency` (read from `haloc_cost_table`, a file
            written by `robustsparse haloc-costs`); the exponent beta of the cost penalty
            CE * (E[cost] / target)^beta (1.5); the Gumbel-softmax temperature annealed from
            5 to 0.1; the feature-map loss weight decaying from 0.5 to 0.01; the logits' Adam
            rate (0.01); training examples held out for the logits (256); their batch (64);
            whether the fixed ranks are moved onto the target (lowered while over it, then
            raised while a step fits; true); null for other methods.
        hydra_score_epochs, hydra_score_lr: `hydra`'s score phase: its length in epochs (the
            weights frozen, the importance scores trained; default: `end_epoch`; it sets
            `start_epoch` to 0 and `end_epoch`, the epoch the top-k mask is fixed) and the scores'
            SGD learning rate (0.1, the paper's); null for other methods (methods/hydra.py).
    """

    method: str = "none"
    granularity: Granularity = "element"
    target_sparsity: float = 0.0
    importance: Literal["l1", "l2"] = "l1"
    allocation: Literal["uniform", "global"] = "uniform"
    max_layer_sparsity: float = 0.95
    global_ranking: Literal["layer_normalised", "raw"] = "layer_normalised"
    synflow_rounds: int = 100
    keep_first_conv_dense: bool = True
    keep_last_linear_dense: bool = True
    keep_dense: tuple[str, ...] = ()
    schedule: Literal["cubic", "linear", "one_shot"] = "cubic"
    initial_sparsity: float = 0.0
    start_epoch: int = 0
    end_epoch: int = 10
    update_every: int = 1
    update_unit: Literal["steps", "epochs"] = "epochs"
    allow_regrowth: bool = False
    pointwise_grouping: Literal["channel_block", "element"] = "channel_block"
    pointwise_block: int = 8
    window_kernel_split: float = 0.5
    n: int | None = None
    m: int = 4
    lr_mode: Literal["standard", "hold", "rewind"] = "standard"
    from_dense: bool = True
    psconv_kept: int | None = None
    psconv_period: int | None = None
    psconv_dense_kernel: bool | None = None
    pconv_pattern_size: int | None = None
    pconv_library_size: int | None = None
    pconv_other_layers: Literal["element", "dense"] | None = None
    drop_pruning_away_prob: float | None = None
    drop_pruning_back_prob: float | None = None
    drop_pruning_candidate_fraction: float | None = None
    drop_pruning_revive: Literal["zero", "previous"] | None = None
    hybrid_examples: int | None = None
    hybrid_ratios: tuple[float, ...] | None = None
    hybrid_tolerance: float | None = None
    hybrid_channel_multiple: int | None = None
    npn_hidden: int | None = None
    npn_lambda: float | None = None
    npn_gate: str | None = None
    npn_lr: float | None = None
    dnr_prune_rate: float | None = None
    dnr_anneal: Literal["cosine", "linear", "none"] | None = None
    dst_threshold: Literal["filter", "layer"] | None = None
    dst_alpha: float | None = None
    dst_alpha_control: Literal["feedback", "fixed"] | None = None
    dst_alpha_gain: float | None = None
    dst_alpha_proportional: float | None = None
    dst_lr: float | None = None
    dst_momentum: float | None = None
    structadmm_rho: float | None = None
    structadmm_rho_factor: float | None = None
    structadmm_rho_max: float | None = None
    structadmm_admm_update_every: int | None = None
    haloc_rank_multiple: int | None = None
    haloc_target: float | None = None
    haloc_cost: Literal["macs", "latency"] | None = None
    haloc_cost_table: str | None = None
    haloc_beta: float | None = None
    haloc_tau_start: float | None = None
    haloc_tau_end: float | None = None
    haloc_fm_lambda_start: float | None = None
    haloc_fm_lambda_end: float | None = None
    haloc_alpha_lr: float | None = None
    haloc_holdout_examples: int | None = None
    haloc_alpha_batch: int | None = None
    haloc_enforce_target: bool | None = None
    # hydra (methods/hydra.py)
    hydra_score_epochs: int | None = None
    hydra_score_lr: float | None = None

    def __post_init__(self) -> None:
        _require(
            self.granularity in ALL_GRANULARITIES,
            "granularity",
            self.granularity,
            "one of " + ", ".join(ALL_GRANULARITIES),
        )
        self._check_method()  # before the schedule checks: a method may decide the schedule
        _require(
            is_number(self.target_sparsity) and 0.0 <= self.target_sparsity < 1.0,
            "target_sparsity",
            self.target_sparsity,
            "a fraction of zeros in [0, 1)",
        )
        _require(
            is_number(self.initial_sparsity) and 0.0 <= self.initial_sparsity <= self.target_sparsity,
            "initial_sparsity",
            self.initial_sparsity,
            f"a fraction in [0, target_sparsity = {self.target_sparsity}]",
        )
        if self.method == "none":
            _require(
                self.target_sparsity == 0.0,
                "target_sparsity",
                self.target_sparsity,
                "0 when method is 'none' (set method: campfire to prune)",
            )
        _require(
            not (self.allocation == "global" and self.granularity in BALANCED_GRANULARITIES),
            "allocation",
            self.allocation,
            f"'uniform' with granularity {self.granularity!r} (a global ranking breaks the per-group balance)",
        )
        _require(
            is_number(self.max_layer_sparsity) and 0.0 < self.max_layer_sparsity <= 1.0,
            "max_layer_sparsity",
            self.max_layer_sparsity,
            "a fraction of zeros in (0, 1]",
        )
        if self.allocation == "global":
            _require(
                self.max_layer_sparsity >= self.target_sparsity,
                "max_layer_sparsity",
                self.max_layer_sparsity,
                f"at least target_sparsity = {self.target_sparsity} with allocation 'global' "
                "(no layer could reach the target otherwise)",
            )
        _require(
            isinstance(self.start_epoch, int) and self.start_epoch >= 0,
            "start_epoch",
            self.start_epoch,
            "an integer >= 0",
        )
        if self.schedule == "one_shot":
            _require(
                isinstance(self.end_epoch, int) and self.end_epoch >= self.start_epoch,
                "end_epoch",
                self.end_epoch,
                f"an integer >= start_epoch ({self.start_epoch})",
            )
        else:
            _require(
                isinstance(self.end_epoch, int) and self.end_epoch > self.start_epoch,
                "end_epoch",
                self.end_epoch,
                f"an integer > start_epoch ({self.start_epoch}) for a {self.schedule} schedule (or schedule: one_shot)",
            )
        _require(
            isinstance(self.update_every, int) and self.update_every >= 1,
            "update_every",
            self.update_every,
            "an integer >= 1",
        )
        _require(
            isinstance(self.pointwise_block, int) and self.pointwise_block >= 2,
            "pointwise_block",
            self.pointwise_block,
            "an integer >= 2",
        )
        _require(
            is_number(self.window_kernel_split) and 0.0 <= self.window_kernel_split <= 1.0,
            "window_kernel_split",
            self.window_kernel_split,
            "a number in [0, 1]",
        )
        _require(isinstance(self.m, int) and self.m >= 2, "m", self.m, "an integer >= 2")
        _require(
            is_int(self.synflow_rounds) and self.synflow_rounds >= 1,
            "synflow_rounds",
            self.synflow_rounds,
            "an integer >= 1",
        )
        for pattern in self.keep_dense:
            _require(
                isinstance(pattern, str) and bool(pattern.strip()),
                "keep_dense",
                list(self.keep_dense),
                "a list of non-empty fnmatch patterns on module names",
            )
        if self.granularity == "n:m":
            derived = nm_keep(self.target_sparsity, self.m)
            if self.n is None:
                # Fill in the derived value so ids, metadata and the written config show it.
                object.__setattr__(self, "n", derived)
            else:
                _require(
                    isinstance(self.n, int) and 1 <= self.n <= self.m, "n", self.n, f"an integer in [1, m = {self.m}]"
                )
                _require(
                    self.n == derived,
                    "n",
                    self.n,
                    f"{derived} for target_sparsity {self.target_sparsity} with m = {self.m} "
                    f"(n:m keeps n of m; set target_sparsity to {1 - self.n / self.m:g} or leave n out)",
                )
        else:
            _require(
                self.n is None or (isinstance(self.n, int) and 1 <= self.n <= self.m),
                "n",
                self.n,
                f"null or an integer in [1, m = {self.m}] (only used by granularity n:m)",
            )

    def _check_method(self) -> None:
        """`method` against the registry; fill in the settings the method decides itself."""
        # Imported here: the method modules build pruners, which import these settings.
        from robustsparse.sparsity.methods import METHOD_NONE, get_method, list_methods, method_names

        _require(
            isinstance(self.method, str) and self.method in method_names(),
            "method",
            self.method,
            "one of " + ", ".join(method_names()),
        )
        # each method checks its own settings and fills in their defaults (null for the others)
        for registered in list_methods():
            if registered.resolve_settings is not None:
                for key, value in registered.resolve_settings(self).items():
                    object.__setattr__(self, key, value)
        if self.method == METHOD_NONE:
            return
        method = get_method(self.method)
        _require(
            self.granularity in method.granularities,
            "granularity",
            self.granularity,
            f"one of {', '.join(method.granularities)} with method {self.method!r}",
        )
        for key, value in method.fixed_settings.items():
            object.__setattr__(self, key, value)


def nm_keep(target_sparsity: float, m: int) -> int:
    """Weights kept per group of `m` nearest to `target_sparsity` (at least 1)."""
    return keep_count(1.0 - target_sparsity, m)


def is_number(value: Any) -> bool:
    """A finite int or float, not a bool (YAML's `true` is not a number): the settings' check."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_int(value: Any) -> bool:
    """An int, not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def settings_to_dict(cfg: SparsityConfig) -> dict[str, Any]:
    """A JSON-able view of the settings (tuples become lists)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out
