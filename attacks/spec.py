"""Attack specs: one frozen, validated description of an attack, parsed once, with clear errors.

An ``AttackSpec`` names an attack of the registry, its threat model (``Linf`` or ``L2``), the
budget ``eps`` in pixel units of [0, 1] images (written ``8/255`` or as a float), the iteration
count ``steps``, the step size ``alpha`` (default ``eps / 4``), ``restarts``, an optional ``seed``
and attack-specific options (``c`` for ``cw``, ``version`` for ``autoattack``...). Defaults are
filled in at construction, so two specs that mean the same attack are equal and share one
``key``, the canonical string used as a table key; ``AttackSpec.parse(spec.key) == spec``.

Example:
    >>> AttackSpec(name="pgd", eps="8/255", steps=10).key
    'pgd:eps=8/255,steps=10,alpha=2/255,restarts=1'
    >>> AttackSpec.parse("pgd:eps=8/255") == AttackSpec(name="pgd", eps=8 / 255)
    True
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from attacks.errors import AttackSpecError
from attacks.registry import AttackInfo, attack_info, list_attacks

__all__ = ["AttackSpec", "parse_eps", "format_eps", "expand_eps", "parse_specs", "NORMS", "DEFAULT_SEED", "EPS_KINDS"]

NORMS = ("Linf", "L2")
EPS_KINDS = ("clean", "bounded", "minimum_norm")
"""Values of ``AttackSpec.eps_kind`` (the ``eps_kind`` column of results tables)."""
DEFAULT_SEED = 0
"""The seed of randomised attacks when neither the spec nor the caller sets one (``evaluate``'s default).

A spec whose ``seed`` equals it is the same spec as one without a seed (same ``key``); it then runs
with the seed passed to ``evaluate``, which is this one unless the caller changes it."""
_CORE = ("norm", "eps", "steps", "alpha", "restarts", "seed")
_NORM_ALIASES = {"linf": "Linf", "inf": "Linf", "l_inf": "Linf", "l2": "L2"}


def parse_eps(value: object, *, what: str = "eps") -> float:
    """A budget in pixel units from ``8/255``, ``"0.03"``, ``0.5``, ``"inf"`` or a ``Fraction``.

    Raises:
        AttackSpecError: not a number, negative or NaN.
    """
    if isinstance(value, bool):
        raise AttackSpecError(f"bad {what} {value!r}: expected a number or a fraction such as 8/255")
    try:
        if isinstance(value, str):
            text = value.replace(" ", "")
            if text.lower() in ("inf", "+inf", "infinity"):
                number = math.inf
            elif "/" in text:
                num, den = text.split("/")
                number = float(Fraction(num) / Fraction(den))
            else:
                number = float(Fraction(text))
        else:
            number = float(value)  # type: ignore[arg-type]
    except (ValueError, TypeError, ZeroDivisionError):
        raise AttackSpecError(f"bad {what} {value!r}: expected a number or a fraction such as 8/255") from None
    if math.isnan(number) or number < 0:
        raise AttackSpecError(f"bad {what} {value!r}: must be >= 0 (pixel units of [0, 1] images, e.g. 8/255)")
    return number


def format_eps(value: float, norm: str = "Linf") -> str:
    """A short label that parses back to exactly ``value``: ``8/255`` for Linf, ``0.5`` for L2.

    Linf budgets that are an exact whole multiple of 1/255 are written ``k/255``; other values use
    the shortest decimal that round-trips, unless that is long and an exact multiple of 1/8 of a
    grey level exists (``0.25/255``, the default step of ``eps = 1/255``).
    """
    if value == 0:
        return "0"
    if math.isinf(value):
        return "inf"
    decimal = f"{value:.6g}"
    decimal = decimal if float(decimal) == value else repr(value)
    # Multiples of 1/8 of a grey level cover eps/4 step sizes of integer and half-level budgets.
    k = round(value * 255 * 8) / 8
    as_255 = f"{k:g}/255"
    exact_255 = parse_eps(as_255) == value
    if exact_255 and ((norm == "Linf" and k == int(k)) or len(decimal) > 6):
        return as_255
    return decimal


def _as_int(value: object, what: str, name: str, minimum: int) -> int:
    if isinstance(value, bool):
        raise AttackSpecError(f"{name}: {what} must be an integer >= {minimum}, got {value!r}")
    try:
        number = int(value)  # type: ignore[call-overload]
        if not isinstance(value, int) and float(value) != number:  # type: ignore[arg-type]
            raise ValueError  # 2.5 or "2.5" are not whole numbers
    except (ValueError, TypeError):
        raise AttackSpecError(f"{name}: {what} must be an integer >= {minimum}, got {value!r}") from None
    if number < minimum:
        raise AttackSpecError(f"{name}: {what} must be an integer >= {minimum}, got {value!r}")
    return number


def _as_option(info: AttackInfo, key: str, value: object) -> float | int | str:
    default = info.options[key]
    if isinstance(default, str):
        text = str(value)
        allowed = info.choices.get(key)
        if allowed is not None and text not in allowed:
            raise AttackSpecError(f"{info.name}: {key}={value!r} is not supported; allowed: {', '.join(allowed)}")
        return text
    if isinstance(default, int) and not isinstance(default, bool):
        return _as_int(value, key, info.name, 0)
    number = parse_eps(value, what=f"{info.name} option {key}") if isinstance(value, str) else value
    if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(float(number)):
        raise AttackSpecError(f"{info.name}: {key} must be a finite number, got {value!r}")
    return float(number)


def _fmt_option(value: float | int | str) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class AttackSpec:
    """One attack, validated and with defaults filled in.

    Args:
        name: registry name (see ``list_attacks()``).
        eps: budget in pixel units: ``"8/255"``, a float, or ``"inf"`` (minimum-norm attacks only).
            Required for bounded attacks; ``clean`` has ``eps = 0``.
        norm: ``"Linf"`` or ``"L2"``; defaults to the attack's own.
        steps: iterations (queries for ``square``); defaults to the registry's.
        alpha: step size of ``bim``, ``pgd``, ``pgd_l2``, ``mifgsm``; default ``eps / 4``.
        restarts: random restarts (randomised attacks only); default 1.
        seed: fixed seed for this spec; ``None`` uses the seed given to ``evaluate``. Dropped (``None``)
            for deterministic attacks and when equal to ``DEFAULT_SEED``, so it never makes a second key.
        options: attack-specific parameters, e.g. ``{"c": 0.1}`` for ``cw``.

    Attributes:
        eps_label: canonical label of ``eps`` (``"8/255"``).
        alpha_label: canonical label of ``alpha`` (``""`` when the attack has none).
        key: canonical string, unique per spec; ``AttackSpec.parse(key) == spec``.

    Raises:
        AttackSpecError: unknown attack, parameter or option, or a bad value (one line, with the
            allowed values).
    """

    name: str
    eps: float | str | None = None
    norm: str | None = None
    steps: int | None = None
    alpha: float | str | None = None
    restarts: int | None = None
    seed: int | None = None
    options: Mapping[str, Any] | tuple[tuple[str, Any], ...] = ()
    eps_label: str = field(init=False, compare=False)
    alpha_label: str = field(init=False, compare=False, repr=False)
    key: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        info = attack_info(self.name)
        name = info.name
        set_ = object.__setattr__
        set_(self, "name", name)  # names are case-insensitive: keep the registry's spelling

        norm = self.norm
        if info.eps == "none":
            if norm not in (None, "none"):
                raise AttackSpecError(f"clean takes no norm, got norm={norm!r}")
            norm = "none"
        else:
            norm = info.norms[0] if norm is None else _NORM_ALIASES.get(str(norm).lower(), str(norm))
            if norm not in info.norms:
                raise AttackSpecError(f"{name}: norm {self.norm!r} is not supported; allowed: {', '.join(info.norms)}")
        set_(self, "norm", norm)

        if info.eps == "none":
            if self.eps is not None and parse_eps(self.eps) != 0:
                raise AttackSpecError(f"clean has eps = 0, got eps={self.eps!r}; use an attack such as pgd")
            eps = 0.0
        elif self.eps is None:
            if info.eps == "required":
                raise AttackSpecError(f"{name} needs eps (pixel units), e.g. '{name}:eps=8/255'")
            eps = math.inf
        else:
            eps = parse_eps(self.eps, what=f"{name} eps")
            if math.isinf(eps) and info.eps == "required":
                raise AttackSpecError(
                    f"{name}: eps must be finite, got {self.eps!r}; only cw and deepfool run unbounded"
                )
            if norm == "Linf" and 1 < eps < math.inf:
                raise AttackSpecError(
                    f"{name}: Linf eps {self.eps!r} is above 1, larger than the whole [0, 1] pixel range; "
                    "write it in pixel units, e.g. 8/255"
                )
        set_(self, "eps", eps)
        set_(self, "eps_label", format_eps(eps, norm))

        if info.steps is None:
            if self.steps is not None:
                what = "uses the reference iteration counts" if name == "autoattack" else "has no steps"
                raise AttackSpecError(f"{name} {what}; drop steps={self.steps!r}")
        else:
            set_(self, "steps", info.steps if self.steps is None else _as_int(self.steps, "steps", name, 1))

        if info.has_alpha:
            alpha = eps / 4 if self.alpha is None else parse_eps(self.alpha, what=f"{name} alpha")
            if not math.isfinite(alpha) or (alpha == 0 and eps > 0):
                raise AttackSpecError(f"{name}: alpha must be a positive step size, got {self.alpha!r}")
            set_(self, "alpha", alpha)
            set_(self, "alpha_label", format_eps(alpha, norm))
        else:
            if self.alpha is not None:
                raise AttackSpecError(f"{name} has no step size alpha; drop alpha={self.alpha!r}")
            set_(self, "alpha_label", "")

        if info.eps == "none" or name == "autoattack" or name == "fgsm":
            if self.restarts is not None and _as_int(self.restarts, "restarts", name, 1) != 1:
                raise AttackSpecError(f"{name} runs once; restarts must be 1, got {self.restarts!r}")
            set_(self, "restarts", None if info.eps == "none" else 1)
        else:
            restarts = 1 if self.restarts is None else _as_int(self.restarts, "restarts", name, 1)
            if restarts > 1 and not info.has_restarts:
                raise AttackSpecError(
                    f"{name} is deterministic, so restarts must be 1, got {restarts}; "
                    "randomised attacks: pgd, pgd_l2, square, apgd_ce, apgd_t, fab"
                )
            set_(self, "restarts", restarts)

        if self.seed is not None:
            seed = _as_int(self.seed, "seed", name, 0)
            # One key per attack: a seed that changes nothing (a deterministic attack) or that equals
            # the default is dropped, so "pgd:eps=8/255,seed=0" and "pgd:eps=8/255" are one spec.
            set_(self, "seed", None if (seed == DEFAULT_SEED or not info.randomized) else seed)

        given = dict(self.options.items() if isinstance(self.options, Mapping) else self.options)
        unknown = sorted(set(given) - set(info.options))
        if unknown:
            allowed = ", ".join(info.options) or "none"
            raise AttackSpecError(f"{name}: unknown option {unknown[0]!r}; allowed options: {allowed}")
        options = {k: _as_option(info, k, given[k]) if k in given else info.options[k] for k in info.options}
        set_(self, "options", tuple(sorted(options.items())))
        set_(self, "key", self._make_key(info))

    def _make_key(self, info: AttackInfo) -> str:
        if info.eps == "none":
            return self.name
        parts = [f"norm={self.norm}"] if len(info.norms) > 1 else []
        parts.append(f"eps={self.eps_label}")
        if self.steps is not None:
            parts.append(f"steps={self.steps}")
        if info.has_alpha:
            parts.append(f"alpha={self.alpha_label}")
        if info.has_restarts:
            parts.append(f"restarts={self.restarts}")
        parts.extend(f"{k}={_fmt_option(v)}" for k, v in self.options)
        if self.seed is not None:
            parts.append(f"seed={self.seed}")
        return f"{self.name}:{','.join(parts)}"

    # ----------------------------------------------------------------------------------------
    @property
    def info(self) -> AttackInfo:
        """The registry entry of this attack."""
        return attack_info(self.name)

    @property
    def eps_kind(self) -> str:
        """``"clean"`` (no attack), ``"minimum_norm"`` (an unbounded attack, eps = inf) or ``"bounded"``."""
        if self.is_clean:
            return "clean"
        return "minimum_norm" if math.isinf(self.eps) else "bounded"  # type: ignore[arg-type]

    @property
    def is_clean(self) -> bool:
        """Whether this is the ``clean`` (no attack) spec."""
        return self.name == "clean"

    def option(self, key: str) -> float | int | str:
        """Value of an attack-specific option (defaults filled in)."""
        for k, v in self.options:  # type: ignore[misc]
            if k == key:
                return v
        known = ", ".join(k for k, _ in self.options) or "none"  # type: ignore[misc]
        raise AttackSpecError(f"{self.name}: no option {key!r}; options: {known}")

    def replace(self, **changes: Any) -> AttackSpec:
        """A copy with some fields changed (validated again)."""
        params = {k: getattr(self, k) for k in ("name", "eps", "norm", "steps", "alpha", "restarts", "seed")}
        params["options"] = dict(self.options)  # type: ignore[arg-type]
        if "eps" in changes and "alpha" not in changes and self.info.has_alpha:
            params["alpha"] = None  # keep the default rule (eps / 4) instead of the old eps's step
        params.update(changes)
        return AttackSpec(**params)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data view: name, norm, eps, eps_label, steps, alpha, alpha_label, restarts, seed, options, key."""
        return {
            "key": self.key,
            "name": self.name,
            "norm": self.norm,
            "eps": self.eps,
            "eps_label": self.eps_label,
            "steps": self.steps,
            "alpha": self.alpha,
            "alpha_label": self.alpha_label,
            "restarts": self.restarts,
            "seed": self.seed,
            "options": dict(self.options),  # type: ignore[arg-type]
        }

    @classmethod
    def clean(cls) -> AttackSpec:
        """The no-attack spec (``eps = 0``)."""
        return cls(name="clean")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AttackSpec:
        """A spec from a mapping such as ``{"name": "cw", "c": 0.1}`` (``attack`` is accepted for ``name``).

        Keys that are not core fields are taken as attack options; ``eps_label``, ``alpha_label``
        and ``key`` (as written by ``to_dict``) are ignored.
        """
        params = dict(data)
        for derived in ("eps_label", "alpha_label", "key"):
            params.pop(derived, None)
        name = params.pop("name", None)
        alias = params.pop("attack", None)
        name = name if name is not None else alias
        if name is None:
            raise AttackSpecError(f"attack spec {dict(data)!r} has no name; allowed: {', '.join(list_attacks())}")
        info = attack_info(str(name).strip())
        options = dict(params.pop("options", None) or {})
        core = {k: params.pop(k) for k in _CORE if k in params}
        for key in list(params):
            if key not in info.options:
                allowed = ", ".join(_allowed_params(info))
                raise AttackSpecError(f"{info.name}: unknown parameter {key!r}; allowed: {allowed}")
            options[key] = params.pop(key)
        return cls(name=info.name, options=options, **core)

    @classmethod
    def parse(cls, text: str | AttackSpec) -> AttackSpec:
        """A spec from ``"name"`` or ``"name:key=value,key=value"``, e.g. ``"pgd:eps=8/255,steps=10"``.

        Raises:
            AttackSpecError: malformed text, unknown attack or parameter, bad value.
        """
        if isinstance(text, AttackSpec):
            return text
        if not isinstance(text, str) or not text.strip():
            raise AttackSpecError(f"bad attack spec {text!r}: expected 'name:key=value,...', e.g. 'pgd:eps=8/255'")
        name, _, rest = text.strip().partition(":")
        info = attack_info(name.strip())
        params: dict[str, str] = {}
        for item in filter(None, (p.strip() for p in rest.split(","))):
            key, sep, value = item.partition("=")
            key = key.strip()
            if not sep or not key or not value.strip():
                raise AttackSpecError(f"bad attack spec {text!r}: {item!r} is not key=value, e.g. 'pgd:eps=8/255'")
            if key in params:
                raise AttackSpecError(f"bad attack spec {text!r}: {key!r} is given twice")
            if key not in _CORE and key not in info.options:
                allowed = ", ".join(_allowed_params(info))
                raise AttackSpecError(f"{info.name}: unknown parameter {key!r} in {text!r}; allowed: {allowed}")
            params[key] = value.strip()
        return cls.from_dict({"name": info.name, **params})


def _allowed_params(info: AttackInfo) -> list[str]:
    core = ["eps"] if info.eps != "none" else []
    if len(info.norms) > 1:
        core.insert(0, "norm")
    if info.steps is not None:
        core.append("steps")
    if info.has_alpha:
        core.append("alpha")
    if info.has_restarts:
        core.append("restarts")
    if info.eps != "none":
        core.append("seed")
    return core + list(info.options)


def expand_eps(name: str, eps_list: Iterable[float | str], **params: Any) -> list[AttackSpec]:
    """One spec per eps of a sweep, e.g. ``expand_eps("pgd", ["1/255", "2/255"], steps=20)``.

    ``alpha`` left unset follows each eps (``eps / 4``). Non-core keyword arguments are options.
    """
    return [AttackSpec.from_dict({"name": name, **params, "eps": eps}) for eps in eps_list]


def parse_specs(items: Iterable[str | AttackSpec | Mapping[str, Any]] | str) -> list[AttackSpec]:
    """Specs from strings, specs or mappings (a mapping's ``eps`` may be a list: one spec per value).

    Duplicates (same ``key``) are dropped, keeping the first; order is kept.

    Example:
        >>> [s.key for s in parse_specs(["clean", {"name": "fgsm", "eps": ["1/255", "2/255"]}])]
        ['clean', 'fgsm:eps=1/255', 'fgsm:eps=2/255']
    """
    if isinstance(items, (str, AttackSpec, Mapping)):
        items = [items]  # type: ignore[list-item]
    specs: list[AttackSpec] = []
    for item in items:
        if isinstance(item, Mapping) and isinstance(item.get("eps"), Sequence) and not isinstance(item["eps"], str):
            rest = {k: v for k, v in item.items() if k != "eps"}
            name = rest.pop("name", rest.pop("attack", None))
            specs.extend(expand_eps(name, item["eps"], **rest))
        elif isinstance(item, Mapping):
            specs.append(AttackSpec.from_dict(item))
        else:
            specs.append(AttackSpec.parse(item))
    unique: dict[str, AttackSpec] = {}
    for spec in specs:
        unique.setdefault(spec.key, spec)
    return list(unique.values())
