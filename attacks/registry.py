"""Attack registry: stable names -> what each attack accepts, and its torchattacks builder.

Every name but ``cw`` maps to one torchattacks class with our defaults; nothing here subclasses or patches
torchattacks. Models take [0, 1] inputs and normalise inside, so torchattacks' normalisation
switches are never used. ``fgsm``, ``bim``, ``pgd``, ``pgd_l2`` and ``mifgsm`` also have an
efficient implementation (``attacks.fast_attacks``) that gives the same attack per example; the torchattacks
builders below are the reference path (``evaluate(..., efficient=False)``) for them. ``cw`` is not
torchattacks' CW (one constant c, no gradient at pixels of exactly 0 or 1) but the reference C&W L2
of ``attacks.carlini_wagner``, on both paths.

AutoAttack is assembled here, not taken from ``torchattacks.AutoAttack``: that class leaves APGD,
APGD-T and FAB at 10 iterations, while the reference standard version (Croce & Hein 2020,
https://arxiv.org/abs/2003.01690) runs APGD-CE (100 iterations), APGD-T (100 iterations, 9 target
classes), FAB-T (100 iterations, 9 target classes) and Square (5,000 queries), one restart each.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal, Protocol

import torchattacks
from torch import nn

from attacks.carlini_wagner import DEFAULTS as CW_DEFAULTS
from attacks.errors import AttackInputError, AttackSpecError

__all__ = ["AttackInfo", "list_attacks", "attack_info", "build_torchattack", "REFERENCE_TARGET_CLASSES"]

REFERENCE_TARGET_CLASSES = 9
"""Target classes of APGD-T and FAB-T in the reference AutoAttack (fewer when the model has fewer classes)."""

Engine = Literal["clean", "fgsm", "iterative", "cw", "noise", "torchattacks"]


class AttackSpec(Protocol):
    """What the builders read of an ``attacks.spec.AttackSpec`` (a protocol, so that ``spec``
    imports ``registry`` and not the other way round)."""

    name: str
    norm: str
    eps: float
    steps: int | None
    alpha: float
    restarts: int | None

    def option(self, key: str) -> float | int | str:
        """Value of an attack-specific option."""
        ...


@dataclass(frozen=True)
class AttackInfo:
    """What an attack name accepts.

    Attributes:
        name: registry name.
        description: one line, with the paper.
        norms: allowed threat models; the first is the default.
        eps: ``"none"`` (clean), ``"required"`` (a budget must be given) or ``"optional"``
            (minimum-norm attacks: unbounded, ``inf``, unless a budget is given).
        steps: default iteration count (queries for ``square``); ``None`` when it cannot be set.
        has_alpha: whether the attack takes a step size ``alpha`` (default ``eps / 4``).
        has_restarts: whether ``restarts > 1`` is meaningful (the attack is randomised).
        randomized: whether the result depends on a seed.
        options: attack-specific parameters and their defaults.
        choices: allowed values of string options.
        engine: which code path runs it when ``efficient=True``.
    """

    name: str
    description: str
    norms: tuple[str, ...]
    eps: Literal["none", "required", "optional"]
    steps: int | None
    has_alpha: bool
    has_restarts: bool
    randomized: bool
    options: Mapping[str, float | int | str] = field(default_factory=dict)
    choices: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    engine: Engine = "torchattacks"

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))
        object.__setattr__(self, "choices", MappingProxyType(dict(self.choices)))


_INFOS: dict[str, AttackInfo] = {
    info.name: info
    for info in (
        AttackInfo(
            "clean", "no attack: the unperturbed examples", ("none",), "none", None, False, False, False, engine="clean"
        ),
        AttackInfo(
            "fgsm",
            "FGSM, Goodfellow et al. 2015 (arXiv:1412.6572)",
            ("Linf",),
            "required",
            None,
            False,
            False,
            False,
            engine="fgsm",
        ),
        AttackInfo(
            "bim",
            "BIM / I-FGSM, Kurakin et al. 2017 (arXiv:1607.02533)",
            ("Linf",),
            "required",
            10,
            True,
            False,
            False,
            engine="iterative",
        ),
        AttackInfo(
            "pgd",
            "PGD with random start, Madry et al. 2018 (arXiv:1706.06083)",
            ("Linf",),
            "required",
            10,
            True,
            True,
            True,
            engine="iterative",
        ),
        AttackInfo(
            "tpgd",
            "PGD on the KL divergence from the clean prediction: TRADES' inner maximisation, Zhang et al. 2019 "
            "(arXiv:1901.08573); labels unused",
            ("Linf",),
            "required",
            10,
            True,
            False,
            True,
        ),
        AttackInfo(
            "pgd_l2",
            "L2 PGD with random start, Madry et al. 2018",
            ("L2",),
            "required",
            10,
            True,
            True,
            True,
            engine="iterative",
        ),
        AttackInfo(
            "mifgsm",
            "MI-FGSM, Dong et al. 2018 (arXiv:1710.06081)",
            ("Linf",),
            "required",
            10,
            True,
            False,
            False,
            options={"decay": 1.0},
            engine="iterative",
        ),
        AttackInfo(
            "cw",
            "Carlini-Wagner L2 with the reference binary search over c, 2017 (arXiv:1608.04644); minimum-norm",
            ("L2",),
            "optional",
            CW_DEFAULTS["steps"],
            False,
            False,
            False,
            options={k: v for k, v in CW_DEFAULTS.items() if k != "steps"},
            engine="cw",
        ),
        AttackInfo(
            "deepfool",
            "DeepFool, Moosavi-Dezfooli et al. 2016 (arXiv:1511.04599); minimum-norm",
            ("L2",),
            "optional",
            50,
            False,
            False,
            False,
            options={"overshoot": 0.02},
        ),
        AttackInfo(
            "noise",
            "uniform random noise in the eps ball: a baseline that gradient attacks must beat",
            ("Linf", "L2"),
            "required",
            None,
            False,
            False,
            True,
            engine="noise",
        ),
        AttackInfo(
            "square",
            "Square attack (gradient-free), Andriushchenko et al. 2020 (arXiv:1912.00049); steps = queries",
            ("Linf", "L2"),
            "required",
            5000,
            False,
            True,
            True,
            options={"p_init": 0.8},
        ),
        AttackInfo(
            "apgd_ce",
            "APGD with cross-entropy loss, Croce & Hein 2020 (arXiv:2003.01690)",
            ("Linf", "L2"),
            "required",
            100,
            False,
            True,
            True,
        ),
        AttackInfo(
            "apgd_t",
            "targeted APGD with DLR loss (top-9 targets), Croce & Hein 2020",
            ("Linf", "L2"),
            "required",
            100,
            False,
            True,
            True,
        ),
        AttackInfo(
            "fab",
            "FAB (untargeted), Croce & Hein 2020 (arXiv:1907.02044)",
            ("Linf", "L2"),
            "required",
            100,
            False,
            True,
            True,
        ),
        AttackInfo(
            "autoattack",
            "AutoAttack standard: APGD-CE, APGD-T, FAB-T, Square at reference settings",
            ("Linf", "L2"),
            "required",
            None,
            False,
            False,
            True,
            options={"version": "standard"},
            choices={"version": ("standard",)},
        ),
    )
}


def list_attacks() -> list[str]:
    """Names of all registered attacks, in registry order (clean first)."""
    return list(_INFOS)


def attack_info(name: str) -> AttackInfo:
    """The registry entry for ``name`` (case-insensitive).

    Raises:
        AttackSpecError: unknown name (the message lists the allowed ones).
    """
    try:
        return _INFOS[name.strip().lower()]  # names are case-insensitive: "PGD" is "pgd"
    except (KeyError, TypeError, AttributeError):
        raise AttackSpecError(f"unknown attack {name!r}; allowed: {', '.join(_INFOS)}") from None


def _target_classes(n_classes: int) -> int:
    # torchattacks attacks ``n_classes - 1`` target ranks; passing this keeps the reference top-9.
    return min(n_classes, REFERENCE_TARGET_CLASSES + 1)


def _fgsm(model: nn.Module, spec: AttackSpec, n_classes: int, seed: int) -> torchattacks.Attack:
    return torchattacks.FGSM(model, eps=spec.eps)


def _bim(model: nn.Module, spec: AttackSpec, n_classes: int, seed: int) -> torchattacks.Attack:
    return torchattacks.BIM(model, eps=spec.eps, alpha=spec.alpha, steps=spec.steps)


def _pgd(model: nn.Module, spec: AttackSpec, n_classes: int, seed: int) -> torchattacks.Attack:
    return torchattacks.PGD(model, eps=spec.eps, alpha=spec.alpha, steps=spec.steps, random_start=True)


def _tpgd(model: nn.Module, spec: AttackSpec, n_classes: int, seed: int) -> torchattacks.Attack:
    return torchattacks.TPGD(model, eps=spec.eps, alpha=spec.alpha, steps=spec.steps)


def _pgd_l2(model: nn.Module, spec: AttackSpec, n_classes: int, seed: int) -> torchattacks.Attack:
    return torchattacks.PGDL2(model, eps=spec.eps, alpha=spec.alpha, steps=spec.steps, random_start=True)


def _mifgsm(model: nn.Module, spec: AttackSpec, n_classes: int, seed: int) -> torchattacks.Attack:
    return torchattacks.MIFGSM(model, eps=spec.eps, alpha=spec.alpha, steps=spec.steps, decay=spec.option("decay"))


def _deepfool(model: nn.Module, spec: AttackSpec, n_classes: int, seed: int) -> torchattacks.Attack:
    return torchattacks.DeepFool(model, steps=spec.steps, overshoot=spec.option("overshoot"))


def _square(model: nn.Module, spec: AttackSpec, n_classes: int, seed: int) -> torchattacks.Attack:
    return torchattacks.Square(
        model,
        norm=spec.norm,
        eps=spec.eps,
        n_queries=spec.steps,
        n_restarts=spec.restarts,
        p_init=spec.option("p_init"),
        seed=seed,
    )


def _apgd_ce(model: nn.Module, spec: AttackSpec, n_classes: int, seed: int) -> torchattacks.Attack:
    return torchattacks.APGD(
        model, norm=spec.norm, eps=spec.eps, steps=spec.steps, n_restarts=spec.restarts, seed=seed, loss="ce"
    )


def _apgd_t(model: nn.Module, spec: AttackSpec, n_classes: int, seed: int) -> torchattacks.Attack:
    return torchattacks.APGDT(
        model,
        norm=spec.norm,
        eps=spec.eps,
        steps=spec.steps,
        n_restarts=spec.restarts,
        seed=seed,
        n_classes=_target_classes(n_classes),
    )


def _fab(model: nn.Module, spec: AttackSpec, n_classes: int, seed: int) -> torchattacks.Attack:
    return torchattacks.FAB(
        model,
        norm=spec.norm,
        eps=spec.eps,
        steps=spec.steps,
        n_restarts=spec.restarts,
        seed=seed,
        multi_targeted=False,
        n_classes=_target_classes(n_classes),
    )


def _autoattack(model: nn.Module, spec: AttackSpec, n_classes: int, seed: int) -> torchattacks.Attack:
    targets = _target_classes(n_classes)
    return torchattacks.MultiAttack(
        [
            torchattacks.APGD(model, norm=spec.norm, eps=spec.eps, steps=100, n_restarts=1, seed=seed, loss="ce"),
            torchattacks.APGDT(
                model, norm=spec.norm, eps=spec.eps, steps=100, n_restarts=1, seed=seed, n_classes=targets
            ),
            torchattacks.FAB(
                model,
                norm=spec.norm,
                eps=spec.eps,
                steps=100,
                n_restarts=1,
                seed=seed,
                multi_targeted=True,
                n_classes=targets,
            ),
            # The reference keeps Square's p schedule at its 10,000-query scale (resc_schedule=False);
            # torchattacks' default rescales it to the 5,000 queries, halving p twice as fast.
            torchattacks.Square(
                model, norm=spec.norm, eps=spec.eps, n_queries=5000, n_restarts=1, seed=seed, resc_schedule=False
            ),
        ]
    )


_BUILDERS: dict[str, Callable[[nn.Module, AttackSpec, int, int], torchattacks.Attack]] = {
    "fgsm": _fgsm,
    "bim": _bim,
    "pgd": _pgd,
    "tpgd": _tpgd,
    "pgd_l2": _pgd_l2,
    "mifgsm": _mifgsm,
    "deepfool": _deepfool,
    "square": _square,
    "apgd_ce": _apgd_ce,
    "apgd_t": _apgd_t,
    "fab": _fab,
    "autoattack": _autoattack,
}

MIN_CLASSES = {"apgd_t": 4, "autoattack": 4}
"""torchattacks' targeted DLR loss reads the 4th-largest logit, so these need at least 4 classes."""


def build_torchattack(model: nn.Module, spec: AttackSpec, *, n_classes: int, seed: int) -> torchattacks.Attack:
    """The torchattacks object for ``spec`` on ``model``, in its default (untargeted) mode.

    Args:
        model: network taking [0, 1] inputs; it must have at least one parameter (torchattacks
            reads the device from it).
        spec: a validated attack spec (not ``clean``).
        n_classes: number of logits of the model.
        seed: the seed passed to attacks that take one.

    Returns:
        A torchattacks attack; call it as ``attack(images, labels)``.

    Raises:
        AttackSpecError: ``clean`` has no attack object.
        AttackInputError: the model has too few classes for the attack.
    """
    if spec.name not in _BUILDERS:
        raise AttackSpecError(f"attack {spec.name!r} has no torchattacks object; allowed: {', '.join(_BUILDERS)}")
    need = MIN_CLASSES.get(spec.name, 2)
    if n_classes < need:
        raise AttackInputError(
            f"{spec.name} needs a model with at least {need} classes, this one has {n_classes}; use apgd_ce or pgd"
        )
    return _BUILDERS[spec.name](model, spec, n_classes, seed)
