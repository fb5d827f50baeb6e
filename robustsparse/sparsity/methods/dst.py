"""DST, dynamic sparse training: trainable thresholds, masks from a step function (methods.md 7).

Liu, Xu, Shi, Cheung, So, "Dynamic Sparse Training: find efficient sparse network from scratch
with trainable masked layers", ICLR 2020 (arXiv 2005.06870; code junjieliu2910/DynamicSparseTraining).

How it is realised here ([paper] = the paper's official code, [ours] = a choice of this project):
- **Thresholds.** Every prunable conv / linear layer gets a trainable threshold per output
  filter (`dst_threshold: filter`, the default [paper]) or one per layer (`layer` [ours]),
  initialised to 0, so training starts dense [paper].
- **Masks.** In the forward pass a layer's weight W becomes W * M with
  M = step(|W| - t), step(x) = 1[x > 0], t broadcast over each filter's weights [paper]. The
  step's backward is the paper's long-tailed estimator `long_tailed_derivative`:

      dM/dQ ~ H(Q),  H(x) = 2 - 4|x|  for |x| <= 0.4,
                           0.4       for 0.4 < |x| <= 1,
                           0         for |x| > 1,            Q = |W| - t

  (`LongTailedStep`). Autograd on W * step(|W| - t) then gives dL/dW = g * M + g * W * H(Q) *
  sign(W) and dL/dt_k = -sum_i g_i * W_i * H(Q_i) over filter k (g = dL/d(W * M)), so a masked
  weight keeps receiving gradient and can come back when |W| rises above t again.
  Masks are recomputed at every forward pass; if a layer keeps <= 1 % of its weights its
  thresholds are reset to 0 (the paper's collapse guard; checked here after every optimizer step,
  where t changes, rather than inside the forward pass).
- **Regulariser.** The loss term is alpha * sum(exp(-t)) over every threshold entry [paper];
  it pushes every threshold up (its gradient on t_k is -alpha * exp(-t_k) < 0).
- **Reaching a target** [ours]. The paper has no target: alpha alone decides how sparse the model
  ends. Users ask for `target_sparsity`, so with `dst_alpha_control: feedback` (the default)
  alpha is steered after every optimizer step by a proportional-integral rule on log(alpha):
      gap = s_target(step) - s(step)
      I  <- I + dst_alpha_gain * gap                 (I starts at log(dst_alpha))
      log(alpha) = I + dst_alpha_proportional * gap
  both clamped to [log ALPHA_MIN, log ALPHA_MAX] and the proportional part to
  +-PROPORTIONAL_CLIP (a large early gap must not multiply alpha by e^20); I does not grow in a
  step where a collapsed layer was reset (anti-windup). s is the current mask sparsity over the
  prunable weights and s_target the `schedule` (cubic by default) from `initial_sparsity` at
  `start_epoch` to `target_sparsity` at `end_epoch`: alpha rises while the model is denser than
  the schedule and falls while it is sparser; the proportional part makes it fall at once when
  the model runs ahead, because alpha >= 0 can only push thresholds up and an overshoot is
  undone only by the task gradient. Defaults (ours, tuned on the digits small CNN): gain 1.0,
  proportional 60 (a gap of -0.05 divides alpha by e^3), `dst_alpha` 5e-4. With
  `fixed`, alpha stays `dst_alpha` (the paper's behaviour; the target is then only recorded).
  Both the target and the achieved sparsity are in the metadata (`dst.target_sparsity`,
  `dst.achieved_sparsity`), with alpha's trace per epoch. Tolerance: within 0.05 of the target
  (tests/train/test_trainer_dst.py). Measured on the digits small CNN from its dense parent,
  `configs/digits-methods.yaml` recipe (30 epochs, masks frozen after 10): 0.525 / 0.726 / 0.919
  for 0.5 / 0.7 / 0.9 (alpha can only push thresholds up, so the error is an overshoot late in
  the ramp); 0.512 / 0.713 / 0.907 on the
  test's 640 examples with a 3-epoch dynamic phase.
- **How masks meet the trainer** [ours]. While the masks are dynamic (steps `start_epoch` to
  `end_epoch` in epochs) the weights themselves are never zeroed [paper: W is never zeroed]:
  a forward hook on each prunable layer recomputes its output with W * M, and `apply_` leaves the
  weights and their optimizer state alone. `masks` is always step(|W| - t) for the current W and
  t, i.e. exactly the mask the next forward pass uses. At `end_epoch` the masks freeze: the
  hooks go, the thresholds stop training, the masked weights and their optimizer state are
  zeroed for good (as every other method's), and training continues with the masks fixed. The
  config loader requires end_epoch <= train.epochs, so a saved model is always frozen: its
  weights already are weights x masks, the deployed model. `end_epoch: <train.epochs>` keeps
  the masks moving to the last step (the paper: no fine-tuning with fixed masks).
- **Optimisation** [ours]. The thresholds have their own SGD (learning rate `dst_lr` 0.01,
  constant; momentum `dst_momentum` 0; no weight decay), held by the pruner and stepped by the
  trainer after every backward pass (`Method.extra_state`). In the paper they share the model's
  optimiser (its learning-rate schedule, momentum 0.9 and weight decay). Momentum 0 is ours:
  with 0.9 the thresholds' velocity carries them far past the target after alpha has fallen
  (measured on digits: 0.97 achieved for a 0.7 target over a 3-epoch dynamic phase; 0.713 with
  momentum 0); set `dst_momentum: 0.9` for the paper's behaviour. Thresholds, their optimiser
  state, alpha and the step are in `state_dict()`, so resume is exact.
- Granularity `element` only (single weights are masked; the thresholds are per filter or
  layer). The paper masks every layer including the first conv and the classifier; here
  `keep_first_conv_dense` / `keep_last_linear_dense` decide as for every method. The paper
  trains from scratch (`from_dense: false`); the methods configs continue from the dense parent
  like the other during-training methods, so every method gets the same budget. Cost: the
  forward hook runs each prunable layer a second time with W * M while the masks are dynamic.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robustsparse.errors import CheckpointError, ConfigError
from robustsparse.sparsity.masks import mask_sparsity
from robustsparse.sparsity.methods.base import Method, refuse_foreign_settings, setting_error, state_to_cpu
from robustsparse.sparsity.methods.registry import register
from robustsparse.sparsity.pruner import CampfirePruner
from robustsparse.sparsity.schedule import schedule_sparsity
from robustsparse.sparsity.settings import SparsityConfig, is_number

__all__ = [
    "DST",
    "DstPruner",
    "LongTailedStep",
    "long_tailed_derivative",
    "resolve_dst_settings",
    "THRESHOLDS",
    "CONTROLS",
    "ALPHA_MIN",
    "ALPHA_MAX",
    "COLLAPSE_DENSITY",
]

log = logging.getLogger(__name__)

METHOD = "dst"
THRESHOLDS: tuple[str, ...] = ("filter", "layer")
CONTROLS: tuple[str, ...] = ("feedback", "fixed")
DEFAULTS: dict[str, Any] = {
    "dst_threshold": "filter",  # the paper's per-filter thresholds
    "dst_alpha": 5e-4,  # the paper's MNIST value; with feedback only where alpha starts
    "dst_alpha_control": "feedback",
    "dst_alpha_gain": 1.0,  # ours: integral gain, log-alpha change per step per unit of sparsity gap
    "dst_alpha_proportional": 60.0,  # ours: proportional gain on log-alpha per unit of sparsity gap
    "dst_lr": 0.01,  # ours (the paper: the model's learning rate, 0.01 on MNIST)
    "dst_momentum": 0.0,  # ours (the paper: the model's SGD momentum, 0.9)
}
ALPHA_MIN, ALPHA_MAX = 1e-9, 1e3  # the feedback's clamp on alpha
PROPORTIONAL_CLIP = 3.0  # the proportional part moves alpha by at most a factor e^3 either way
COLLAPSE_DENSITY = 0.01  # a layer keeping at most this share has its thresholds reset (paper)
DST_FORMAT = "robustsparse.dst"


def resolve_dst_settings(cfg: SparsityConfig) -> dict[str, Any]:
    """dst's settings checked and completed (defaults filled in); {} for other methods.

    Raises:
        ConfigError: a dst setting is given for another method or is out of range, or the
            schedule leaves no dynamic phase (one line each).
    """
    if cfg.method != METHOD:
        refuse_foreign_settings(cfg, METHOD, DEFAULTS)
        return {}
    out = {key: DEFAULTS[key] if getattr(cfg, key) is None else getattr(cfg, key) for key in DEFAULTS}
    if out["dst_threshold"] not in THRESHOLDS:
        raise setting_error("dst_threshold", out["dst_threshold"], f"one of {', '.join(THRESHOLDS)}")
    if out["dst_alpha_control"] not in CONTROLS:
        raise setting_error("dst_alpha_control", out["dst_alpha_control"], f"one of {', '.join(CONTROLS)}")
    if not is_number(out["dst_alpha"]) or not ALPHA_MIN <= out["dst_alpha"] <= ALPHA_MAX:
        raise setting_error(
            "dst_alpha", out["dst_alpha"], f"a number in [{ALPHA_MIN:g}, {ALPHA_MAX:g}] (the regulariser's strength)"
        )
    if not (is_number(out["dst_alpha_gain"]) and out["dst_alpha_gain"] > 0):
        raise setting_error(
            "dst_alpha_gain", out["dst_alpha_gain"], "a number > 0 (log-alpha change per step per unit gap)"
        )
    proportional = out["dst_alpha_proportional"]
    if not (is_number(proportional) and proportional >= 0):
        raise setting_error("dst_alpha_proportional", proportional, "a number >= 0 (log-alpha offset per unit gap)")
    if not (is_number(out["dst_lr"]) and out["dst_lr"] > 0):
        raise setting_error("dst_lr", out["dst_lr"], "a number > 0 (the thresholds' SGD learning rate)")
    momentum = out["dst_momentum"]
    if not (is_number(momentum) and 0 <= momentum < 1):
        raise setting_error("dst_momentum", momentum, "a number in [0, 1) (the thresholds' SGD momentum)")
    if cfg.schedule == "one_shot":
        raise setting_error(
            "schedule", cfg.schedule, "cubic or linear with method 'dst' (the masks need a dynamic phase)"
        )
    return out


def long_tailed_derivative(q: torch.Tensor) -> torch.Tensor:
    """The paper's long-tailed estimate H(q) of the step function's derivative (module docstring)."""
    a = q.abs()
    return torch.where(a <= 0.4, 2.0 - 4.0 * a, torch.where(a <= 1.0, torch.full_like(a, 0.4), torch.zeros_like(a)))


class LongTailedStep(torch.autograd.Function):
    """step(q) = 1[q > 0] forward; backward grad * H(q), H = `long_tailed_derivative`:
    H(x) = 2 - 4|x| for |x| <= 0.4, 0.4 for 0.4 < |x| <= 1, 0 beyond."""

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(q)
        return (q > 0).to(q.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (q,) = ctx.saved_tensors
        return grad * long_tailed_derivative(q)


def _broadcast(t: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """A threshold vector (K,) or (1,) shaped to broadcast over `weight`'s filters."""
    return t.view(-1, *([1] * (weight.dim() - 1)))


def _layer_output(module: nn.Module, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    if isinstance(module, nn.Conv2d):
        return F.conv2d(x, weight, module.bias, module.stride, module.padding, module.dilation, module.groups)
    return F.linear(x, weight, module.bias)


class DstPruner(CampfirePruner):
    """A `CampfirePruner` whose `element` masks are step(|W| - t) with trainable thresholds t.

    See the module docstring for the method; the trainer's calls (`step`, `apply_`, `state_dict`)
    are those of every pruner.

    Args:
        model, cfg, steps_per_epoch: as `CampfirePruner`.

    Attributes:
        thresholds: one trainable tensor per prunable layer ((filters,) or (1,)), in layer order.
        optimizer: their SGD (`Method.extra_state`).
        alpha: the regulariser's current strength.

    While the masks are dynamic the model carries forward hooks bound to this pruner: copy its
    `state_dict()` into a fresh model rather than deep-copying the model itself.
    """

    def __init__(self, model: nn.Module, cfg: SparsityConfig, steps_per_epoch: int) -> None:
        super().__init__(model, cfg, steps_per_epoch)
        self.layers = list(self._engine.layers)
        params = self._params()
        modules = dict(model.named_modules())
        for layer in self.layers:
            module = modules[layer.module]
            if isinstance(module, nn.Conv2d) and module.padding_mode != "zeros":
                raise ConfigError(
                    f"config error: method 'dst' masks {layer.module!r}, a conv with padding_mode "
                    f"{module.padding_mode!r}; only 'zeros' is supported (or keep it dense with keep_dense)"
                )
        self.thresholds = nn.ParameterList(
            [
                nn.Parameter(
                    torch.zeros(
                        layer.shape[0] if cfg.dst_threshold == "filter" else 1, device=params[layer.param].device
                    )
                )
                for layer in self.layers
            ]
        )
        self.optimizer = torch.optim.SGD(
            self.thresholds.parameters(), lr=float(cfg.dst_lr), momentum=float(cfg.dst_momentum)
        )
        self.alpha = float(cfg.dst_alpha)
        self.log_alpha_i = math.log(self.alpha)
        self.seen_step = 0
        self.resets = 0
        self.trace: list[dict[str, float]] = []
        self._handles: list[Any] = []
        for i, layer in enumerate(self.layers):
            self._handles.append(modules[layer.module].register_forward_hook(self._mask_hook(i)))

    # ------------------------------------------------------------------ the dynamic phase
    @property
    def dynamic(self) -> bool:
        """True while the masks follow the thresholds: from `start_epoch` until the freeze."""
        return bool(self.layers) and not self.frozen and self.seen_step >= self.plan.start_step

    def _mask_hook(self, index: int):
        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor | None:
            del output  # recomputed with the masked weight
            if not self.dynamic:
                return None
            weight = module.weight
            t = _broadcast(self.thresholds[index], weight)
            mask = LongTailedStep.apply(weight.abs() - t.to(weight.dtype))
            return _layer_output(module, inputs[0], weight * mask)

        return hook

    @torch.no_grad()
    def threshold_masks(self) -> dict[str, torch.Tensor]:
        """Weight name -> step(|W| - t) from the current weights and thresholds (True = kept)."""
        params = self._params()
        out = {}
        for layer, t in zip(self.layers, self.thresholds):
            w = params[layer.param]
            out[layer.param] = (w.abs() - _broadcast(t, w).to(w.dtype)) > 0
        return out

    def loss_term(self) -> torch.Tensor | None:
        """alpha * sum(exp(-t)) over every threshold entry (None once the masks stop moving)."""
        if not self.dynamic:
            return None
        return self.alpha * sum(torch.exp(-t).sum() for t in self.thresholds)

    def scheduled_target(self, global_step: int) -> float:
        """The sparsity the feedback steers to after `global_step` steps (the schedule)."""
        return schedule_sparsity(global_step / self.steps_per_epoch, self.cfg)

    def mask_sparsity(self) -> float:
        """The share of masked entries over the prunable weights."""
        return mask_sparsity(self.masks, [layer.param for layer in self.layers]) if self.layers else 0.0

    # ------------------------------------------------------------------ the training-loop calls
    def step(self, global_step: int, optimizer: torch.optim.Optimizer | None = None) -> bool:
        """After an optimizer step: collapse guard, masks from the thresholds, alpha's feedback; freeze at `end_epoch`.

        Returns:
            Whether the masks changed.
        """
        if self.frozen:
            return False
        self.seen_step = int(global_step)
        if not self.layers:
            if global_step >= self.plan.end_step:
                self._last_update = self.plan.end_step
            return False
        if not self.dynamic:  # before start_epoch: dense, nothing moves
            return False
        new = self.threshold_masks()
        reset = self._collapse_guard(new)
        changed = bool(torch.stack([(self.masks[n] != m).any() for n, m in new.items()]).any())
        self.masks = {**self.masks, **new}
        self._pairs = None
        self.current_target = self.scheduled_target(global_step)
        achieved = self.mask_sparsity()
        if self.cfg.dst_alpha_control == "feedback":
            gap = self.current_target - achieved
            # integral part (the level alpha settles at) + proportional part (alpha falls at once
            # when the model runs ahead of the schedule, so momentum does not carry it far past)
            lo, hi = math.log(ALPHA_MIN), math.log(ALPHA_MAX)
            if not (reset and gap > 0):  # anti-windup: a reset layer is not a reason to push harder
                self.log_alpha_i = min(hi, max(lo, self.log_alpha_i + float(self.cfg.dst_alpha_gain) * gap))
            proportional = float(self.cfg.dst_alpha_proportional) * gap
            log_alpha = self.log_alpha_i + min(PROPORTIONAL_CLIP, max(-PROPORTIONAL_CLIP, proportional))
            self.alpha = float(math.exp(min(hi, max(lo, log_alpha))))
        if global_step % self.steps_per_epoch == 0 or global_step >= self.plan.end_step:
            self.trace.append(
                {"step": int(global_step), "alpha": self.alpha, "target": self.current_target, "sparsity": achieved}
            )
        if global_step >= self.plan.end_step:
            self._freeze(optimizer)
        return changed

    @torch.no_grad()
    def _collapse_guard(self, masks: dict[str, torch.Tensor]) -> bool:
        """Reset the thresholds of every layer whose `masks` keep <= COLLAPSE_DENSITY (and its
        mask with them, in place); whether any was."""
        params = self._params()
        shares = torch.stack([masks[layer.param].float().mean() for layer in self.layers]).tolist()  # one sync
        reset = False
        for layer, t, kept in zip(self.layers, self.thresholds, shares):
            if kept <= COLLAPSE_DENSITY:
                t.zero_()
                w = params[layer.param]
                masks[layer.param] = (w.abs() - _broadcast(t, w).to(w.dtype)) > 0
                self.resets += 1
                reset = True
                log.info("dst: %s kept %.4f of its weights; its thresholds are reset to 0", layer.module, kept)
        return reset

    def _freeze(self, optimizer: torch.optim.Optimizer | None) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        for t in self.thresholds:
            t.requires_grad_(False)
        self._last_update = self.plan.end_step
        self.current_target = float(self.cfg.target_sparsity)
        self.apply_(optimizer)
        log.info(
            "dst: masks frozen at step %d (target %.4f, achieved %.4f, alpha %.3g)",
            self.plan.end_step,
            self.cfg.target_sparsity,
            self.achieved()["prunable"],
            self.alpha,
        )

    @torch.no_grad()
    def apply_(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Zero the masked weights and their optimizer state, once the masks are frozen.

        While the masks are dynamic nothing is zeroed: the forward pass multiplies by the mask,
        and a masked weight keeps its value and its optimizer state so it can come back.
        """
        if self.frozen:  # then as every pruner (before, `mask_grads_` leaves the gradients too)
            super().apply_(optimizer)

    # ------------------------------------------------------------------ reporting
    @torch.no_grad()
    def achieved(self) -> dict[str, float]:
        """Measured sparsity of the model as its forward pass sees it (W * M while dynamic)."""
        params = self._params()
        names = [layer.param for layer in self.layers]
        zeros = {n: int(((params[n] == 0) | ~self.masks[n].to(params[n].device)).sum()) for n in names}
        total = sum(params[n].numel() for n in names)
        all_zeros = sum(zeros.get(n, int((p == 0).sum())) for n, p in params.items())
        all_total = sum(p.numel() for p in params.values())
        return {
            "prunable": sum(zeros.values()) / total if total else 0.0,
            "all": all_zeros / all_total if all_total else 0.0,
        }

    def nearest_achievable(self) -> float:
        """DST cannot predict its final masks: the current mask sparsity."""
        return self.mask_sparsity()

    def _achievable_note(self, achievable: float) -> str:
        return (
            f"target {self.cfg.target_sparsity:g}, achieved {achievable:.4f}: sparsity emerges from the thresholds "
            f"(alpha {self.cfg.dst_alpha_control})"
        )

    def metadata(self) -> dict[str, Any]:
        """Campfire's metadata plus the thresholds, alpha's trace and the target vs the achieved sparsity."""
        params = self._params()
        per_layer = {}
        for layer, t in zip(self.layers, self.thresholds):
            m = self.masks[layer.param]
            per_layer[layer.module] = {
                "threshold_mean": float(t.detach().mean()),
                "threshold_min": float(t.detach().min()),
                "threshold_max": float(t.detach().max()),
                "sparsity": float((~m).sum()) / m.numel(),
                "weights": int(params[layer.param].numel()),
            }
        return {
            **super().metadata(),
            "scores": "dst mask = 1[|w| - t > 0] with trainable thresholds t (long-tailed step estimator)",
            "dst": {
                "threshold": self.cfg.dst_threshold,
                "alpha_control": self.cfg.dst_alpha_control,
                "alpha_start": float(self.cfg.dst_alpha),
                "alpha": float(self.alpha),
                "alpha_gain": float(self.cfg.dst_alpha_gain),
                "alpha_proportional": float(self.cfg.dst_alpha_proportional),
                "feedback": "gap = scheduled target - mask sparsity; I += dst_alpha_gain * gap; "
                "log(alpha) = I + dst_alpha_proportional * gap; every step"
                if self.cfg.dst_alpha_control == "feedback"
                else None,
                "regulariser": "alpha * sum(exp(-t)) over every threshold",
                "estimator": "H(x) = 2 - 4|x| (|x| <= 0.4), 0.4 (0.4 < |x| <= 1), 0 (|x| > 1)",
                "target_sparsity": float(self.cfg.target_sparsity),
                "achieved_sparsity": self.mask_sparsity(),
                "collapse_resets": int(self.resets),
                "trace": [dict(row) for row in self.trace],
                "layers": per_layer,
            },
        }

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        """Campfire's state plus the thresholds, their optimiser, alpha, the step and the trace."""
        return {
            **super().state_dict(),
            "dst": {
                "format": DST_FORMAT,
                "thresholds": [t.detach().cpu().clone() for t in self.thresholds],
                "optimizer": state_to_cpu(self.optimizer.state_dict()),
                "alpha": float(self.alpha),
                "log_alpha_i": float(self.log_alpha_i),
                "seen_step": int(self.seen_step),
                "resets": int(self.resets),
                "trace": [dict(row) for row in self.trace],
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()`; after the freeze the hooks are removed again."""
        super().load_state_dict(state)
        extra = state.get("dst")
        if not isinstance(extra, dict) or extra.get("format") != DST_FORMAT:
            raise CheckpointError("pruner state has no dst part; resume only from a state saved by DstPruner")
        saved = extra["thresholds"]
        if len(saved) != len(self.thresholds) or any(s.shape != t.shape for s, t in zip(saved, self.thresholds)):
            raise CheckpointError("pruner state's dst thresholds belong to another model or dst_threshold setting")
        with torch.no_grad():
            for t, s in zip(self.thresholds, saved):
                t.copy_(s.to(t.device))
        self.optimizer.load_state_dict(extra["optimizer"])
        self.alpha = float(extra["alpha"])
        self.log_alpha_i = float(extra["log_alpha_i"])
        self.seen_step = int(extra["seen_step"])
        self.resets = int(extra["resets"])
        self.trace = [dict(row) for row in extra["trace"]]
        if self.frozen:
            for handle in self._handles:
                handle.remove()
            self._handles = []
            for t in self.thresholds:
                t.requires_grad_(False)


def _build(model: nn.Module, cfg: SparsityConfig, steps_per_epoch: int, seed: int) -> DstPruner:
    del seed  # thresholds start at 0: nothing random
    return DstPruner(model, cfg, steps_per_epoch)


DST = register(
    Method(
        name=METHOD,
        description="dynamic sparse training: trainable per-filter thresholds, masks from a step function, "
        "alpha steered to the target",
        when="during_training",
        granularities=("element",),
        build_pruner=_build,
        resolve_settings=resolve_dst_settings,
        fixed_settings={"update_every": 1, "update_unit": "steps", "allow_regrowth": True},
        extra_state=lambda pruner: pruner.optimizer,
        loss_term=lambda pruner: pruner.loss_term(),
    )
)
