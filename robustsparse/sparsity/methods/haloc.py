"""HALOC: hardware-aware automatic low-rank compression (Xiao et al., AAAI 2023; methods.md 15).

No weight is zeroed: every k x k conv (except the stem, 1x1 convs and layers in `keep_dense`)
becomes a Tucker-2 factorisation whose rank is searched, then fixed, and the compact network of
plain convs is fine-tuned. The granularity is `lowrank` (not a mask granularity: the masks are
empty and the sparsity is 0; parameters and effective MACs in the metadata are the factorised
network's, the axis on which it is compared with sparse models).

How it is realised here (the method section of the paper could not be read; each
reconstruction is a setting, `haloc_...` in `SparsityConfig`, default in brackets; [paper] marks
what the paper's abstract or a summary states, the rest is ours or methods.md's reconstruction):
- **Factors** [paper: Tucker-2, HOSVD-style]: from the trained dense parent (`from_dense`,
  fixed), HOSVD at the largest candidate rank; candidate r uses the leading slices
  (`lowrank.RankSearchConv2d`). Candidates are multiples of g (`haloc_rank_multiple`, 8) up to
  min(C, S), input rank = output rank [paper: both rules].
- **Search window**: global steps `start_epoch` .. `end_epoch` (in epochs). Each layer has one
  logit per candidate, initialised to 0; the weights train through the argmax candidate (ties go
  to the larger rank, so training starts from the largest candidate, the closest to the parent)
  with loss CE + lambda * mean over layers of MSE(layer output, the frozen parent's output of
  that layer) [paper: a feature-map loss], lambda decaying geometrically from
  `haloc_fm_lambda_start` (0.5) to `haloc_fm_lambda_end` (0.01).
- **Logit steps** [paper: alternating, hardware-aware]: after every weight step in the window,
  one Adam step (`haloc_alpha_lr`, 0.01) of the logits alone on a batch (`haloc_alpha_batch`,
  64) of the held-out examples (`haloc_holdout_examples`, 256, a seeded part of the training
  split the weights never train on), the model in eval mode (weights and BatchNorm statistics
  frozen), every layer mixing its candidates by a Gumbel-softmax sample at temperature tau
  (annealed geometrically from `haloc_tau_start` 5 to `haloc_tau_end` 0.1 over the window) in
  one masked-core pass. Loss: CE * (E[cost] / target)^beta when the expected cost
  E[cost] = sum_l sum_j m_lj cost_l(r_j) is over the target, plain CE otherwise (beta
  `haloc_beta`, 1.5). The noise and the batch come from generators seeded by (seed, step), so
  a resumed run is exact.
- **Cost**: `haloc_cost: macs` (the Tucker-2 MACs formula) or `latency` (a table measured on the
  target device and batch: `robustsparse haloc-costs`, named by `haloc_cost_table`). The target
  is `haloc_target` (1 - target_sparsity unless given) times the compressed layers' dense cost.
- **Fixing the ranks**: at `end_epoch` every layer takes its argmax candidate [paper]; with
  `haloc_enforce_target` (true, ours) the ranks are then moved onto the budget: while the total
  cost is over the target the layer whose next lower candidate costs the least logit margin steps
  down, then while a step up still fits under the target the layer whose next higher candidate
  the logits like best steps up. So models meant to match a compute budget do (the search alone
  often ends well under it: the penalty acts only above the target, and the weights, trained at
  the argmax ranks, make the current ranks look best to the logits). The search layers become compact `TuckerConv2d`s (three plain convs of
  ranks (r, r)), the optimiser is re-bound to the new parameters (its state for the factors
  starts afresh) and training continues (fine-tuning) with plain CE.
- Checkpoints hold the compact network; the ranks per layer are in the metadata
  (`sparsity.lowrank.ranks`), from which `load_checkpoint` rebuilds the architecture.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robustsparse.errors import CheckpointError, ConfigError
from robustsparse.sparsity.haloc_costs import load_cost_table, macs_table
from robustsparse.sparsity.lowrank import (
    RankSearchConv2d,
    compressible_convs,
    conv_geometry,
    rank_candidates,
    set_module,
)
from robustsparse.sparsity.methods.base import Method, refuse_foreign_settings, setting_error
from robustsparse.sparsity.methods.registry import register
from robustsparse.sparsity.settings import LOWRANK, SparsityConfig, is_int, is_number, settings_to_dict

__all__ = ["HALOC", "HalocPruner", "resolve_haloc_settings", "rebind_optimizer"]

log = logging.getLogger(__name__)

METHOD = "haloc"
HALOC_FORMAT = "robustsparse.haloc"
DEFAULTS: dict[str, Any] = {
    "haloc_rank_multiple": 8,
    "haloc_target": None,  # derived: 1 - target_sparsity
    "haloc_cost": "macs",
    "haloc_cost_table": None,
    "haloc_beta": 1.5,
    "haloc_tau_start": 5.0,
    "haloc_tau_end": 0.1,
    "haloc_fm_lambda_start": 0.5,
    "haloc_fm_lambda_end": 0.01,
    "haloc_alpha_lr": 0.01,
    "haloc_holdout_examples": 256,
    "haloc_alpha_batch": 64,
    "haloc_enforce_target": True,
}


def resolve_haloc_settings(cfg: SparsityConfig) -> dict[str, Any]:
    """haloc's settings checked and completed (defaults filled in); {} for other methods.

    Raises:
        ConfigError: a haloc setting given to another method or out of range, a target that
            disagrees with target_sparsity, or a latency cost without a table (one line each).
    """
    if cfg.method != METHOD:
        refuse_foreign_settings(cfg, METHOD, DEFAULTS)
        return {}
    out = {key: DEFAULTS[key] if getattr(cfg, key) is None else getattr(cfg, key) for key in DEFAULTS}
    derived = round(1.0 - float(cfg.target_sparsity), 10)
    if out["haloc_target"] is None:
        out["haloc_target"] = derived
    elif (
        not (is_number(out["haloc_target"]) and 0 < out["haloc_target"] <= 1)
        or abs(out["haloc_target"] - derived) > 1e-9
    ):
        raise setting_error(
            "haloc_target",
            out["haloc_target"],
            f"1 - target_sparsity = {derived:g} (the share of the compressed layers' cost kept; "
            "set target_sparsity or leave haloc_target out)",
        )
    if not (is_int(out["haloc_rank_multiple"]) and out["haloc_rank_multiple"] >= 1):
        raise setting_error(
            "haloc_rank_multiple", out["haloc_rank_multiple"], "an integer >= 1 (g: ranks are multiples of it)"
        )
    if out["haloc_cost"] == "latency" and not out["haloc_cost_table"]:
        raise setting_error(
            "haloc_cost_table", None, "a file from robustsparse haloc-costs CONFIG --out FILE with haloc_cost: latency"
        )
    if out["haloc_cost_table"] is not None and out["haloc_cost"] != "latency":
        raise setting_error("haloc_cost_table", out["haloc_cost_table"], "null with haloc_cost: macs")
    for key in ("haloc_beta", "haloc_tau_start", "haloc_tau_end", "haloc_fm_lambda_start", "haloc_alpha_lr"):
        if not (is_number(out[key]) and out[key] > 0):
            raise setting_error(key, out[key], "a number > 0")
    if not (isinstance(out["haloc_fm_lambda_end"], (int, float)) and out["haloc_fm_lambda_end"] >= 0):
        raise setting_error("haloc_fm_lambda_end", out["haloc_fm_lambda_end"], "a number >= 0")
    for key in ("haloc_holdout_examples", "haloc_alpha_batch"):
        if not (is_int(out[key]) and out[key] >= 1):
            raise setting_error(key, out[key], "an integer >= 1")
    if not isinstance(out["haloc_enforce_target"], bool):
        raise setting_error("haloc_enforce_target", out["haloc_enforce_target"], "true or false")
    if cfg.schedule == "one_shot" or cfg.end_epoch <= cfg.start_epoch:
        raise setting_error(
            "end_epoch", cfg.end_epoch, "an epoch after start_epoch with method 'haloc' (the search window)"
        )
    return out


def rebind_optimizer(optimizer: torch.optim.Optimizer, model: nn.Module) -> None:
    """Point `optimizer`'s two groups (`build_optimizer`'s: weights with decay, the rest without)
    at `model`'s current parameters; state of parameters no longer in the model is dropped."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    other = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    if len(optimizer.param_groups) != 2:
        raise ValueError("rebind_optimizer expects build_optimizer's two parameter groups")
    optimizer.param_groups[0]["params"], optimizer.param_groups[1]["params"] = decay, other
    kept = {id(p) for p in decay + other}
    for p in [p for p in optimizer.state if id(p) not in kept]:
        del optimizer.state[p]


def _geometric(start: float, end: float, progress: float) -> float:
    """start -> end geometrically as progress goes 0 -> 1 (linear when an end is 0)."""
    progress = min(max(progress, 0.0), 1.0)
    if start <= 0 or end <= 0:
        return start + (end - start) * progress
    return start * (end / start) ** progress


class HalocPruner:
    """Drives the rank search of one model and fixes its ranks (see the module docstring).

    Args:
        model: the trained dense model (factorised in place: its search layers are installed now).
        cfg: the sparsity settings (haloc's filled in).
        steps_per_epoch: optimizer steps per epoch.
        seed: the model's seed (Gumbel noise and held-out batches).
        example_batch: the held-out examples (inputs, labels), never trained on by the weights.

    Attributes:
        masks: always empty (no weight is zeroed).
        ranks: layer -> (r_in, r_out) once fixed (None during the search).
        optimizer: the logits' Adam optimiser (`Method.extra_state`; its gradients come from the
            logit steps only).
    """

    def __init__(
        self,
        model: nn.Module,
        cfg: SparsityConfig,
        steps_per_epoch: int,
        seed: int,
        example_batch: tuple[torch.Tensor, torch.Tensor],
    ) -> None:
        self.model, self.cfg, self.steps_per_epoch, self.seed = model, cfg, int(steps_per_epoch), int(seed)
        self.masks: dict[str, torch.Tensor] = {}
        self.current_target = 0.0
        self.start_step = int(cfg.start_epoch) * self.steps_per_epoch
        self.end_step = int(cfg.end_epoch) * self.steps_per_epoch
        device = next(model.parameters()).device
        # on the model's device once: every search step draws its batch from it
        self.heldout = (example_batch[0].detach().to(device), example_batch[1].detach().to(device))
        self.layers = compressible_convs(
            model, keep_first_conv_dense=cfg.keep_first_conv_dense, keep_dense=cfg.keep_dense
        )
        if not self.layers:
            raise ConfigError("config error: method 'haloc' found no k x k conv to factorise in this model")
        # every other conv / linear layer stays as it is (the layer table shows them as dense)
        self.dense_layers = {
            n: "not factorised"
            for n, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear)) and n not in self.layers
        }
        self.geometry = conv_geometry(model, self.heldout[0][:1], self.layers)
        g = int(cfg.haloc_rank_multiple)
        self.candidates = {
            n: rank_candidates(self.geometry[n].in_channels, self.geometry[n].out_channels, g) for n in self.layers
        }
        if cfg.haloc_cost == "latency":
            table = load_cost_table(cfg.haloc_cost_table, self.candidates)
            self.cost_info = {k: v for k, v in table.items() if k != "layers"}
            costs = table["layers"]
        else:
            costs = macs_table(self.geometry, g)
            self.cost_info = {"kind": "macs", "unit": "MACs per example"}
        self.dense_costs = {n: float(costs[n]["dense"]) for n in self.layers}
        self.costs = {
            n: torch.tensor([float(costs[n]["ranks"][str(r)]) for r in self.candidates[n]], dtype=torch.float64)
            for n in self.layers
        }
        # on the model's device once (expected_cost runs every search step; .to there is then a no-op)
        self._device_costs = [self.costs[n].to(device) for n in self.layers]
        self.target = float(cfg.haloc_target) * sum(self.dense_costs.values())
        # the frozen parent, for the feature-map loss
        self.original: nn.Module | None = copy.deepcopy(model).eval()
        for p in self.original.parameters():
            p.requires_grad_(False)
        for name in self.layers:
            conv = model.get_submodule(name)
            set_module(model, name, RankSearchConv2d(conv, self.candidates[name]))
        self.logits = nn.ParameterList(
            [nn.Parameter(torch.zeros(len(self.candidates[n]), device=device)) for n in self.layers]
        )
        self.optimizer = torch.optim.Adam(self.logits.parameters(), lr=float(cfg.haloc_alpha_lr))
        self.ranks: dict[str, tuple[int, int]] | None = None
        self.seen_step = 0
        self.history: list[dict[str, float]] = []
        self._outputs: dict[str, torch.Tensor] = {}
        self._reference: dict[str, torch.Tensor] = {}
        self._handles: list[Any] = []
        self._install_hooks()
        self._choose()

    # ------------------------------------------------------------------ the search
    @property
    def frozen(self) -> bool:
        """True once the ranks are fixed."""
        return self.ranks is not None

    def _search_modules(self) -> dict[str, RankSearchConv2d]:
        return {n: self.model.get_submodule(n) for n in self.layers}

    def _progress(self, step: int) -> float:
        return (step - self.start_step) / max(self.end_step - self.start_step, 1)

    def temperature(self, step: int) -> float:
        """The Gumbel-softmax temperature after `step` global steps."""
        return _geometric(float(self.cfg.haloc_tau_start), float(self.cfg.haloc_tau_end), self._progress(step))

    def fm_lambda(self, step: int) -> float:
        """The feature-map loss weight after `step` global steps."""
        return _geometric(
            float(self.cfg.haloc_fm_lambda_start), float(self.cfg.haloc_fm_lambda_end), self._progress(step)
        )

    def probabilities(self) -> dict[str, list[float]]:
        """Layer -> softmax of its candidate logits."""
        return {n: torch.softmax(lg.detach().cpu(), 0).tolist() for n, lg in zip(self.layers, self.logits)}

    def _choose(self) -> None:
        """Every search layer takes its argmax candidate (ties: the larger rank)."""
        flipped = torch.stack([torch.argmax(logits.detach().flip(0)) for logits in self.logits]).tolist()  # one sync
        for module, logits, last in zip(self._search_modules().values(), self.logits, flipped):
            module.mixture = None
            module.choice = len(logits) - 1 - last

    def _install_hooks(self) -> None:
        modules = self._search_modules()
        originals = dict(self.original.named_modules())

        def capture_reference(module: nn.Module, args: Any) -> None:
            del module
            self._outputs, self._reference = {}, {}
            if not (self.model.training and torch.is_grad_enabled()) or self.frozen:
                return
            with torch.no_grad():
                self.original(args[0])

        def store(store_in: str, name: str):
            def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
                del module, inputs
                if store_in == "reference" and not torch.is_grad_enabled():
                    self._reference[name] = output
                elif store_in == "outputs" and self.model.training and torch.is_grad_enabled():
                    self._outputs[name] = output

            return hook

        self._handles.append(self.model.register_forward_pre_hook(capture_reference))
        for name in self.layers:
            self._handles.append(modules[name].register_forward_hook(store("outputs", name)))
            self._handles.append(originals[name].register_forward_hook(store("reference", name)))

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles, self._outputs, self._reference = [], {}, {}

    def loss_term(self) -> torch.Tensor | None:
        """lambda * mean over layers of MSE(layer output, the frozen parent's) of the latest
        training forward (None after the search or when nothing was captured)."""
        if self.frozen or not self._outputs or set(self._outputs) != set(self._reference):
            return None
        mse = torch.stack([F.mse_loss(self._outputs[n].float(), self._reference[n].float()) for n in self.layers])
        return self.fm_lambda(self.seen_step + 1) * mse.mean()

    def expected_cost(self, mixtures: list[torch.Tensor]) -> torch.Tensor:
        """sum_l sum_j m_lj cost_l(r_j) of per-layer candidate weights."""
        return sum((m.double() * cost.to(m.device)).sum() for cost, m in zip(self._device_costs, mixtures))

    def alpha_step(self, step: int) -> dict[str, float]:
        """One Adam step of the logits on a held-out batch (weights and BatchNorm frozen)."""
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + int(step))
        n = self.heldout[0].shape[0]
        index = torch.randperm(n, generator=gen)[: min(int(self.cfg.haloc_alpha_batch), n)]
        device = self.logits[0].device
        index = index.to(self.heldout[0].device)
        x, y = self.heldout[0][index].to(device), self.heldout[1][index].to(device)
        tau = self.temperature(step)
        mixtures = []
        for module, logits in zip(self._search_modules().values(), self.logits):
            uniform = torch.rand(logits.shape, generator=gen).clamp_(1e-10, 1 - 1e-10).to(device)
            gumbel = -torch.log(-torch.log(uniform))
            module.mixture = torch.softmax((logits + gumbel) / tau, 0)
            mixtures.append(module.mixture)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.enable_grad():
                ce = F.cross_entropy(self.model(x), y)
                expected = self.expected_cost(mixtures)
                ratio = expected / self.target
                loss = ce * ratio.float() ** float(self.cfg.haloc_beta) if float(ratio.detach()) > 1 else ce
                grads = torch.autograd.grad(loss, list(self.logits))
        finally:
            self.model.train(was_training)
        self.optimizer.zero_grad(set_to_none=True)
        for p, g in zip(self.logits, grads):
            p.grad = g
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._choose()
        return {"step": int(step), "tau": tau, "ce": float(ce.detach()), "expected_cost_ratio": float(ratio.detach())}

    # ------------------------------------------------------------------ fixing the ranks
    def _argmax_ranks(self) -> dict[str, int]:
        """Layer -> candidate index: argmax, then lowered until the target is met (enforce_target)."""
        choice = {n: m.choice for n, m in self._search_modules().items()}

        def cost() -> float:
            return sum(float(self.costs[n][choice[n]]) for n in self.layers)

        if self.cfg.haloc_enforce_target:
            logits = {n: lg.detach().cpu() for n, lg in zip(self.layers, self.logits)}
            while cost() > self.target:
                lowerable = [n for n in self.layers if choice[n] > 0]
                if not lowerable:
                    break
                # the step down that gives up the least logit margin (ties: the first layer)
                best = min(lowerable, key=lambda n: float(logits[n][choice[n]] - logits[n][choice[n] - 1]))
                choice[best] -= 1
            # then fill the budget: raise the layer whose next candidate the logits like best, while it fits
            while True:
                fits = [
                    n
                    for n in self.layers
                    if choice[n] + 1 < len(self.candidates[n])
                    and cost() - float(self.costs[n][choice[n]]) + float(self.costs[n][choice[n] + 1]) <= self.target
                ]
                if not fits:
                    break
                best = max(fits, key=lambda n: float(logits[n][choice[n] + 1] - logits[n][choice[n]]))
                choice[best] += 1
        return choice

    def fix_ranks(
        self, optimizer: torch.optim.Optimizer | None, ranks: dict[str, tuple[int, int]] | None = None
    ) -> None:
        """Fix the ranks (argmax, or `ranks` when restoring), install the compact layers and
        re-bind `optimizer` to them."""
        modules = self._search_modules()
        if ranks is None:
            choice = self._argmax_ranks()
            ranks = {n: (self.candidates[n][choice[n]],) * 2 for n in self.layers}
        self._remove_hooks()
        for name in self.layers:
            set_module(self.model, name, modules[name].compact(ranks[name][0]))
        self.ranks = {n: (int(r[0]), int(r[1])) for n, r in ranks.items()}
        self.original = None
        if optimizer is not None:
            rebind_optimizer(optimizer, self.model)
        log.info("haloc: ranks fixed %s (cost %.4f of dense)", self.ranks, self.cost_fraction())

    def cost_fraction(self) -> float:
        """The fixed (or current argmax) ranks' cost over the compressed layers' dense cost."""
        total = 0.0
        for n in self.layers:
            r = self.ranks[n][0] if self.ranks else self.candidates[n][self._search_modules()[n].choice]
            total += float(self.costs[n][self.candidates[n].index(r)])
        return total / sum(self.dense_costs.values())

    # ------------------------------------------------------------------ the training-loop calls
    def step(self, global_step: int, optimizer: torch.optim.Optimizer | None = None) -> bool:
        """After a weight step: a logit step inside the window; at `end_epoch` fix the ranks."""
        if self.frozen:
            return False
        self.seen_step = int(global_step)
        if global_step >= self.end_step:
            self.fix_ranks(optimizer)
            return True
        if self.start_step < global_step:
            record = self.alpha_step(global_step)
            if global_step % self.steps_per_epoch == 0:
                self.history.append(record)
        return False

    def apply_(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Nothing to enforce: no weight is masked."""
        del optimizer

    def achieved(self) -> dict[str, float]:
        """Sparsity (fraction of zeros): none by construction."""
        return {"prunable": 0.0, "all": 0.0}

    def granularity_info(self) -> dict[str, Any]:
        return {"method": METHOD, "granularity": LOWRANK, "dense_layers": dict(self.dense_layers)}

    def metadata(self) -> dict[str, Any]:
        """Settings, candidates, probabilities, costs and the fixed ranks (`lowrank.ranks`, which
        `load_checkpoint` rebuilds the architecture from)."""
        return {
            "format": HALOC_FORMAT,
            "method": METHOD,
            "granularity": LOWRANK,
            "dense_layers": dict(self.dense_layers),
            "settings": settings_to_dict(self.cfg),
            "steps_per_epoch": self.steps_per_epoch,
            "schedule": {"kind": "rank search", "start_step": self.start_step, "end_step": self.end_step},
            "frozen": self.frozen,
            "lowrank": {
                "ranks": {n: list(r) for n, r in (self.ranks or {}).items()},
                "candidates": {n: list(c) for n, c in self.candidates.items()},
                "probabilities": self.probabilities(),
                "cost": {
                    **self.cost_info,
                    "dense": self.dense_costs,
                    "target_fraction": float(self.cfg.haloc_target),
                    "achieved_fraction": self.cost_fraction(),
                },
                "search_log": list(self.history),
            },
        }

    def state_dict(self) -> dict[str, Any]:
        """The logits, their optimiser, the step, the log and the fixed ranks (resume is exact)."""
        return {
            "haloc": {
                "format": HALOC_FORMAT,
                "logits": [p.detach().cpu().clone() for p in self.logits],
                "optimizer": copy.deepcopy(self.optimizer.state_dict()),
                "seen_step": self.seen_step,
                "history": list(self.history),
                "ranks": None if self.ranks is None else {n: list(r) for n, r in self.ranks.items()},
            }
        }

    def _extra(self, state: dict[str, Any]) -> dict[str, Any]:
        extra = state.get("haloc") if isinstance(state, dict) else None
        if not isinstance(extra, dict) or extra.get("format") != HALOC_FORMAT:
            raise CheckpointError("pruner state has no haloc part; resume only from a state saved by HalocPruner")
        return extra

    def prepare_restore(self, state: dict[str, Any], optimizer: torch.optim.Optimizer | None = None) -> None:
        """Before the model's weights are restored: the architecture the state was saved with
        (the compact layers when the ranks were fixed), and `optimizer` bound to it."""
        ranks = self._extra(state)["ranks"]
        if ranks is not None and not self.frozen:
            self.fix_ranks(optimizer, {n: tuple(r) for n, r in ranks.items()})

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()` (after `prepare_restore` and the model's weights)."""
        extra = self._extra(state)
        with torch.no_grad():
            for p, v in zip(self.logits, extra["logits"]):
                p.copy_(v)
        self.optimizer.load_state_dict(extra["optimizer"])
        self.seen_step = int(extra["seen_step"])
        self.history = list(extra["history"])
        if extra["ranks"] is not None and not self.frozen:
            self.fix_ranks(None, {n: tuple(r) for n, r in extra["ranks"].items()})
        if not self.frozen:
            self._choose()


def _build(
    model: nn.Module,
    cfg: SparsityConfig,
    steps_per_epoch: int,
    seed: int,
    example_batch: tuple[torch.Tensor, torch.Tensor],
) -> HalocPruner:
    return HalocPruner(model, cfg, steps_per_epoch, seed, example_batch)


HALOC = register(
    Method(
        name=METHOD,
        description="hardware-aware low-rank compression: Tucker-2 convs with ranks searched by Gumbel-softmax, then fine-tuned",
        when="after_training",
        granularities=(LOWRANK,),
        build_pruner=_build,
        resolve_settings=resolve_haloc_settings,
        fixed_settings={"from_dense": True},
        extra_state=lambda pruner: pruner.optimizer,
        loss_term=lambda pruner: pruner.loss_term(),
        needs_data=True,
        data_examples=lambda cfg: int(cfg.haloc_holdout_examples),
        holds_out=True,
    )
)
