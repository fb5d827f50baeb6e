"""The `attack:` section's entries -> `attacks.AttackSpec`s, with errors as `ConfigError`.

Parsing of attack names, eps values and parameters lives in the `attacks` package; this module
only adds the run's seed where an entry sets none and puts the key path into the message.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from attacks.errors import AttackSpecError
from attacks.spec import AttackSpec, parse_eps, parse_specs
from robustsparse.errors import ConfigError

__all__ = ["specs_from_entries", "pixel_eps"]


def specs_from_entries(entries: Iterable[Mapping[str, Any]], *, seed: int) -> list[AttackSpec]:
    """`clean` followed by every entry's specs (an `eps` list expands into one spec per value).

    Raises:
        ConfigError: an entry names an unknown attack or parameter, or a bad value.
    """
    items: list[Any] = ["clean"]
    for i, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise ConfigError(
                f"config error: attack.specs[{i}] = {entry!r} is not allowed; expected a mapping such as {{name: pgd, eps: [8/255], steps: 10}}"
            )
        items.append({"seed": seed, **entry} if "name" in entry and entry["name"] != "clean" else dict(entry))
    try:
        return parse_specs(items)
    except AttackSpecError as exc:
        raise ConfigError(f"config error: attack.specs: {exc}") from None


def pixel_eps(value: Any, key: str) -> float:
    """An eps in pixel units from `8/255` or a number; ConfigError naming `key` otherwise."""
    try:
        eps = parse_eps(value)
    except AttackSpecError:
        eps = -1.0
    if not 0.0 <= eps <= 1.0:
        raise ConfigError(
            f"config error: {key} = {value!r} is not allowed; expected a pixel-space budget such as 8/255 or 0.03"
        )
    return eps
