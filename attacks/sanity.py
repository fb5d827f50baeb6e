"""Sanity checks against gradient masking and broken evaluations, returned as flags with evidence.

A model that only *looks* robust (masked or obfuscated gradients, Athalye et al. 2018,
https://arxiv.org/abs/1802.00420) or an evaluation that is subtly wrong leaves traces in the
results. Each check below yields one ``SanityFlag`` with status ``passed``, ``failed`` or
``not_run`` (the results hold nothing the check needs; never counted as passed):

- ``eps0_equals_clean``: an attack run at eps = 0 (really run, never replaced by the identity)
  gives exactly the clean outcomes;
- ``monotone_in_eps``: robust accuracy of an attack does not rise with eps;
- ``iterative_not_weaker_than_fgsm``: BIM/PGD/MI-FGSM/APGD are not weaker than FGSM at the same
  eps, compared only where the iterative attack can travel the whole ball (``steps x alpha >= eps``);
- ``large_eps_near_zero``: at a large eps some attack brings accuracy near zero;
- ``unbounded_fools_all``: every unbounded (minimum-norm, eps = inf) attack fools at least
  ``MIN_UNBOUNDED_SUCCESS`` of the clean-correct examples;
- ``square_not_stronger``: the gradient-free Square attack does not beat the best gradient attack;
- ``noise_not_stronger``: uniform random noise (the ``noise`` baseline) at the same eps does not
  beat the best gradient attack;
- ``whitebox_not_weaker_than_transfer``: white-box attacks are at least as strong as the same
  attacks transferred from another copy of the model (``transfer=`` the transfer result scored on
  this model); a model whose gradients are masked is broken more easily through a clean copy;
- ``zero_gradients``: few examples have an all-zero input gradient (needs
  ``zero_gradient_fraction(model, ...)``).

There is no "more steps are not weaker" check: the early-stopped iterative attacks keep each
example's first fooling iterate, so a longer run of the same attack extends the shorter one and
its fooled set contains the shorter run's by construction; such a check could not fail.

Comparisons allow ``tol`` (accuracy points as a fraction) for the randomness of attacks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from attacks._model import attack_mode, resolve_device
from attacks.batching import tensor_batches
from attacks.result import FRAME_COLUMNS, EvaluationResult

__all__ = ["SanityFlag", "sanity_checks", "flags_frame", "zero_gradient_fraction", "CHECK_NAMES"]

CHECK_NAMES = (
    "eps0_equals_clean",
    "monotone_in_eps",
    "iterative_not_weaker_than_fgsm",
    "large_eps_near_zero",
    "unbounded_fools_all",
    "square_not_stronger",
    "noise_not_stronger",
    "whitebox_not_weaker_than_transfer",
    "zero_gradients",
)
STATUSES = ("passed", "failed", "not_run")
"""Values of ``SanityFlag.status`` (the ``status`` column of sanity.csv)."""

MIN_UNBOUNDED_SUCCESS = 0.99
"""An unbounded attack must fool at least this fraction of the clean-correct examples: with no
budget every example can be moved across the decision boundary, so a lower rate is a broken attack
(e.g. torchattacks' CW at a pixel of exactly 0 or 1) or masked gradients, not robustness."""

ITERATIVE_ATTACKS = ("bim", "pgd", "mifgsm", "apgd_ce", "apgd_t")
GRADIENT_ATTACKS = ("fgsm", "bim", "pgd", "pgd_l2", "mifgsm", "apgd_ce", "apgd_t", "fab", "cw", "deepfool")
_ADAPTIVE_STEP = ("apgd_ce", "apgd_t")  # no alpha: their step size starts at 2 eps
_SAME_ATTACK = ["attack", "norm", "restarts", "options", "seed"]


@dataclass(frozen=True)
class SanityFlag:
    """Outcome of one check.

    Attributes:
        name: one of ``CHECK_NAMES``.
        status: ``"passed"``, ``"failed"`` (suspicious) or ``"not_run"`` (nothing to compare).
        evidence: one line with the numbers behind the status.
        scope: the model the check is about (``model_id`` of a multi-model frame), else ``""``.
    """

    name: str
    status: Literal["passed", "failed", "not_run"]
    evidence: str
    scope: str = ""

    @property
    def passed(self) -> bool:
        """True only when the check ran and found nothing (``not_run`` is not a pass)."""
        return self.status == "passed"

    @property
    def flagged(self) -> bool:
        """True when the check found something suspicious."""
        return self.status == "failed"


def flags_frame(flags: Sequence[SanityFlag]) -> pd.DataFrame:
    """Flags as a table: ``scope, name, status, evidence``."""
    return pd.DataFrame(
        [{"scope": f.scope, "name": f.name, "status": f.status, "evidence": f.evidence} for f in flags],
        columns=["scope", "name", "status", "evidence"],
    )


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _label(row: pd.Series) -> str:
    steps = "" if pd.isna(row.get("steps")) else f"-{int(row['steps'])}"
    return f"{row['attack']}{steps}@{row['eps_label']}"


def _summarise(name: str, problems: list[tuple[float, str]], checked: int, ok_text: str, scope: str) -> SanityFlag:
    if not checked:
        return SanityFlag(name, "not_run", "no results to compare", scope)
    if not problems:
        return SanityFlag(name, "passed", ok_text, scope)
    problems.sort(key=lambda p: -p[0])
    more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
    return SanityFlag(name, "failed", "; ".join(text for _, text in problems[:3]) + more, scope)


def _eps0(frame: pd.DataFrame, result: EvaluationResult | None, scope: str) -> SanityFlag:
    clean = frame[frame["attack"] == "clean"]
    zero = frame[(frame["attack"] != "clean") & (frame["eps"] == 0)]
    if clean.empty or zero.empty:
        return SanityFlag("eps0_equals_clean", "not_run", "no attack evaluated at eps = 0", scope)
    n_clean = int(clean["n_correct"].iloc[0])
    problems = []
    for _, row in zero.iterrows():
        differ = (
            int((result[row["key"]].correct != result.clean_correct).sum())
            if result is not None
            else abs(int(row["n_correct"]) - n_clean)
        )
        if differ:
            problems.append(
                (
                    differ,
                    f"{row['key']}: {differ} example(s) differ from clean "
                    f"({int(row['n_correct'])} vs {n_clean} correct)",
                )
            )
    return _summarise(
        "eps0_equals_clean",
        problems,
        len(zero),
        f"{len(zero)} eps = 0 result(s) equal clean ({n_clean} correct)",
        scope,
    )


def _monotone(frame: pd.DataFrame, tol: float, scope: str) -> SanityFlag:
    rows = frame[frame["attack"] != "clean"]
    problems, checked = [], 0
    for _, group in rows.groupby(_SAME_ATTACK + ["steps"], dropna=False):
        group = group.sort_values("eps")
        if group["eps"].nunique() < 2:
            continue
        checked += 1
        best = group.iloc[0]
        for _, row in group.iloc[1:].iterrows():
            rise = row["accuracy"] - best["accuracy"]
            if rise > tol:
                problems.append(
                    (rise, f"{_label(best)} {_pct(best['accuracy'])} rises to {_label(row)} {_pct(row['accuracy'])}")
                )
            if row["accuracy"] < best["accuracy"]:
                best = row
    return _summarise(
        "monotone_in_eps", problems, checked, f"accuracy non-increasing in eps for {checked} attack sweep(s)", scope
    )


def _compare(
    frame: pd.DataFrame,
    name: str,
    weak: Sequence[str],
    strong: Sequence[str],
    tol: float,
    scope: str,
    ok_text: str,
    best_of_strong: bool = False,
    full_reach: bool = False,
) -> SanityFlag:
    """Flag where an attack in ``strong`` has higher accuracy than ``weak`` at the same norm and eps.

    ``full_reach``: compare only strong rows that can travel the whole ball (``steps x alpha >= eps``).
    """
    problems, checked = [], 0
    bounded = frame[(frame["eps"] > 0) & np.isfinite(frame["eps"])]
    for (_, _), group in bounded.groupby(["norm", "eps"]):
        weak_rows = group[group["attack"].isin(weak)]
        strong_rows = group[group["attack"].isin(strong)]
        if full_reach:
            reach = group["steps"].astype(float) * group["alpha"].astype(float)
            strong_rows = strong_rows[
                strong_rows["attack"].isin(_ADAPTIVE_STEP)
                | (reach[strong_rows.index] >= strong_rows["eps"] * (1 - 1e-9))
            ]
        if weak_rows.empty or strong_rows.empty:
            continue
        if best_of_strong:
            # Square vs the best gradient attack: square (here "weak" = the attack that must not win).
            best = strong_rows.loc[strong_rows["accuracy"].idxmin()]
            for _, row in weak_rows.iterrows():
                checked += 1
                gap = best["accuracy"] - row["accuracy"]
                if gap > tol:
                    problems.append(
                        (
                            gap,
                            f"{_label(row)} {_pct(row['accuracy'])} beats the best gradient attack "
                            f"{_label(best)} {_pct(best['accuracy'])}",
                        )
                    )
            continue
        reference = weak_rows.loc[weak_rows["accuracy"].idxmin()]
        for _, row in strong_rows.iterrows():
            checked += 1
            gap = row["accuracy"] - reference["accuracy"]
            if gap > tol:
                problems.append(
                    (
                        gap,
                        f"{_label(row)} {_pct(row['accuracy'])} is weaker than {_label(reference)} "
                        f"{_pct(reference['accuracy'])}",
                    )
                )
    return _summarise(name, problems, checked, ok_text.format(n=checked), scope)


def _large_eps(frame: pd.DataFrame, large_eps: Mapping[str, float], near_zero: float, scope: str) -> SanityFlag:
    rows = frame[(frame["attack"] != "clean") & np.isfinite(frame["eps"])]
    problems, checked = [], 0
    for norm, threshold in large_eps.items():
        big = rows[(rows["norm"] == norm) & (rows["eps"] >= threshold)]
        for _, group in big.groupby("eps"):
            checked += 1
            best = group.loc[group["accuracy"].idxmin()]
            if best["accuracy"] > near_zero:
                problems.append(
                    (
                        best["accuracy"],
                        f"best attack at large eps {_label(best)} still leaves "
                        f"{_pct(best['accuracy'])} (> {_pct(near_zero)})",
                    )
                )
    if not checked:
        limits = ", ".join(f"{n} eps >= {v:.4g}" for n, v in large_eps.items()) or "none set"
        return SanityFlag("large_eps_near_zero", "not_run", f"no attack at a large eps ({limits})", scope)
    return _summarise(
        "large_eps_near_zero",
        problems,
        checked,
        f"accuracy <= {_pct(near_zero)} at {checked} large eps value(s)",
        scope,
    )


def _unbounded(frame: pd.DataFrame, scope: str) -> SanityFlag:
    rows = frame[(frame["attack"] != "clean") & np.isinf(frame["eps"].astype(float))]
    if rows.empty:
        return SanityFlag("unbounded_fools_all", "not_run", "no unbounded (eps = inf) attack evaluated", scope)
    problems = []
    for _, row in rows.iterrows():
        rate = row["attack_success_rate"]
        if not (rate >= MIN_UNBOUNDED_SUCCESS):  # NaN (no clean-correct example) fails too
            problems.append(
                (
                    1 - rate if rate == rate else 1.0,
                    f"{_label(row)} fools only {_pct(rate)} of the clean-correct examples "
                    f"(needs >= {_pct(MIN_UNBOUNDED_SUCCESS)}); the attack or the gradients are broken",
                )
            )
    return _summarise(
        "unbounded_fools_all",
        problems,
        len(rows),
        f"{len(rows)} unbounded attack(s) fool >= {_pct(MIN_UNBOUNDED_SUCCESS)} of the clean-correct examples",
        scope,
    )


def _whitebox_vs_transfer(frame: pd.DataFrame, transferred: pd.DataFrame | None, tol: float, scope: str) -> SanityFlag:
    name = "whitebox_not_weaker_than_transfer"
    if transferred is None:
        return SanityFlag(name, "not_run", "no transfer result from a copy of the model given", scope)
    theirs = transferred.set_index("key")["accuracy"]
    problems, checked = [], 0
    for _, row in frame[frame["attack"] != "clean"].iterrows():
        if row["key"] not in theirs.index:
            continue
        checked += 1
        gap = row["accuracy"] - float(theirs[row["key"]])
        if gap > tol:
            problems.append(
                (
                    gap,
                    f"white-box {_label(row)} {_pct(row['accuracy'])} is weaker than the same attack transferred "
                    f"from a copy {_pct(float(theirs[row['key']]))}",
                )
            )
    return _summarise(name, problems, checked, f"white-box at least as strong as transfer ({checked} attack(s))", scope)


def _zero_grad(fraction: float | None, limit: float, scope: str) -> SanityFlag:
    if fraction is None:
        return SanityFlag("zero_gradients", "not_run", "zero_gradient_fraction not computed", scope)
    status = "failed" if fraction > limit else "passed"
    return SanityFlag(
        "zero_gradients",
        status,
        f"{_pct(fraction)} of examples have an all-zero input gradient (limit {_pct(limit)})",
        scope,
    )


def sanity_checks(
    results: EvaluationResult | pd.DataFrame,
    *,
    tol: float = 0.02,
    large_eps: Mapping[str, float] | None = None,
    near_zero: float = 0.05,
    zero_grad_fraction: float | Mapping[str, float] | None = None,
    max_zero_grad_fraction: float = 0.01,
    transfer: EvaluationResult | pd.DataFrame | None = None,
) -> list[SanityFlag]:
    """Run every check on one model's results (or on each ``model_id`` of a multi-model frame).

    Args:
        results: an ``EvaluationResult`` (per-example checks possible) or a frame with the
            columns of ``EvaluationResult.to_frame()`` (plus ``model_id`` for several models).
        tol: allowed accuracy difference (fraction, 0.02 = 2 points) before a comparison flags; short
            or randomly started attacks differ by a few examples without any masking.
        large_eps: norm -> eps from which accuracy must be near zero; default ``{"Linf": 64/255}``.
        near_zero: the accuracy that counts as near zero at a large eps.
        zero_grad_fraction: from ``zero_gradient_fraction`` (a mapping ``model_id -> fraction``
            for a multi-model frame); ``None`` leaves that check ``not_run``.
        max_zero_grad_fraction: the largest fraction of all-zero gradients that passes.
        transfer: the same attacks crafted on a copy of the model (e.g. one without its
            preprocessing, or an independently trained twin) and scored on this model: a
            ``TransferResult``'s target result or its frame (one model). ``None``: ``not_run``.

    Returns:
        One ``SanityFlag`` per check (and per model), in ``CHECK_NAMES`` order.
    """
    large = {"Linf": 64 / 255} if large_eps is None else dict(large_eps)
    transferred = transfer.to_frame() if isinstance(transfer, EvaluationResult) else transfer
    result = results if isinstance(results, EvaluationResult) else None
    frame = results.to_frame() if isinstance(results, EvaluationResult) else results
    missing = set(FRAME_COLUMNS) - set(frame.columns)
    if missing:
        raise ValueError(f"results frame lacks columns {sorted(missing)}; use EvaluationResult.to_frame()")
    if "model_id" in frame.columns and frame["model_id"].nunique() > 1:
        scopes = [(str(mid), part) for mid, part in frame.groupby("model_id", sort=False)]
    else:
        scopes = [(str(frame["model_id"].iloc[0]) if "model_id" in frame.columns and len(frame) else "", frame)]
    flags: list[SanityFlag] = []
    for scope, part in scopes:
        part = part.copy()
        part["options"] = part["options"].fillna("")
        fraction = zero_grad_fraction.get(scope) if isinstance(zero_grad_fraction, Mapping) else zero_grad_fraction
        flags += [
            _eps0(part, result, scope),
            _monotone(part, tol, scope),
            _compare(
                part,
                "iterative_not_weaker_than_fgsm",
                ["fgsm"],
                ITERATIVE_ATTACKS,
                tol,
                scope,
                "iterative attacks at least as strong as FGSM ({n} comparison(s))",
                full_reach=True,
            ),
            _large_eps(part, large, near_zero, scope),
            _unbounded(part, scope),
            _compare(
                part,
                "square_not_stronger",
                ["square"],
                GRADIENT_ATTACKS,
                tol,
                scope,
                "square never beat the best gradient attack ({n} comparison(s))",
                best_of_strong=True,
            ),
            _compare(
                part,
                "noise_not_stronger",
                ["noise"],
                GRADIENT_ATTACKS,
                tol,
                scope,
                "random noise never beat the best gradient attack ({n} comparison(s))",
                best_of_strong=True,
            ),
            _whitebox_vs_transfer(part, transferred, tol, scope),
            _zero_grad(fraction, max_zero_grad_fraction, scope),
        ]
    return flags


def zero_gradient_fraction(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> float:
    """Fraction of examples whose cross-entropy input gradient is exactly zero everywhere.

    A zero gradient leaves gradient attacks nothing to follow (e.g. an input quantiser or a
    saturated softmax): robustness measured by them is then meaningless for those examples.
    The model is evaluated in eval mode; its mode is restored.
    """
    dev = resolve_device(model, device)
    zero = total = 0
    with attack_mode(model):
        for batch in tensor_batches(images, labels, batch_size):
            x = batch.images.to(dev).detach().clone().requires_grad_(True)
            loss = F.cross_entropy(model(x), batch.labels.to(dev), reduction="sum")
            grad = torch.autograd.grad(loss, x, allow_unused=True)[0] if loss.requires_grad else None
            if grad is None:
                zero += len(x)
            else:
                zero += int((grad.flatten(1) == 0).all(dim=1).sum())
            total += len(x)
    return zero / total if total else 0.0
