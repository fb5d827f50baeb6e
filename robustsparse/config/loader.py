"""Reading experiment files: YAML -> overrides -> validated, frozen `ExperimentConfig`; and back.

Validation is generic: every dataclass field's type hint says what is accepted (bool, int,
float, str, Literal vocabularies, optional values, tuples, nested sections), so a new setting
is validated the moment it is declared. Errors are one line naming the key, the bad value and
what is allowed.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import itertools
import json
import re
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from robustsparse.config.schema import ExperimentConfig, SparsityConfig
from robustsparse.errors import ConfigError

__all__ = [
    "load_config",
    "config_from_dict",
    "apply_overrides",
    "config_to_dict",
    "dump_config",
    "config_digest",
    "experiment_digest",
]

_MISSING = object()
# numbers in exponent notation without a dot, which PyYAML (YAML 1.1) leaves as strings
_EXPONENT_FLOAT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> ExperimentConfig:
    """Read, override and validate an experiment file.

    Args:
        path: the YAML experiment file.
        overrides: `section.key=value` strings (values parsed as YAML: `0.5`, `[0.5, 0.7]`, `cubic`).

    Returns:
        The frozen configuration.

    Raises:
        ConfigError: the file is missing, empty or malformed, or a key, type or value is not allowed.

    Example:
        >>> cfg = load_config("configs/digits-quick.yaml", ["train.epochs=2"])
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"config error: experiment file {str(path)!r} does not exist; pass the path of a YAML file such as configs/digits-quick.yaml"
        )
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"config error: {path} is not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if raw is None or raw == {}:
        # an empty file would silently run the built-in defaults, which is never what was meant
        raise ConfigError(
            f"config error: {path} is empty; an experiment file names at least its sections "
            "(name, seeds, data, model, train, sparsity, attack): start from configs/digits-quick.yaml"
        )
    if not isinstance(raw, dict):
        raise ConfigError(
            f"config error: {path} must hold a mapping of sections (name, seeds, data, model, train, sparsity, attack), not a {type(raw).__name__}"
        )
    return config_from_dict(apply_overrides(raw, overrides))


def apply_overrides(raw: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of `raw` with every `a.b.c=value` override applied (value parsed as YAML)."""
    result = copy.deepcopy(dict(raw))
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(
                f"config error: override {item!r} is not of the form section.key=value (e.g. train.epochs=5)"
            )
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        node = result
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"config error: override {item!r}: {part!r} is not a section")
            node = child
        node[parts[-1]] = value
    return result


def config_from_dict(raw: Mapping[str, Any]) -> ExperimentConfig:
    """Validate a plain mapping (as read from YAML) into an `ExperimentConfig`."""
    raw = dict(raw)
    sparsity_raw = raw.pop("sparsity", None)
    config = _build(ExperimentConfig, raw, "")
    grid = _expand_sparsity(sparsity_raw)
    return dataclasses.replace(config, sparsity=grid)


def _is_tuple_type(tp: Any) -> bool:
    """A tuple type, possibly optional (`tuple[str, ...]`, `tuple[float, ...] | None`)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return any(_is_tuple_type(arg) for arg in typing.get_args(tp))
    return typing.get_origin(tp) is tuple


# The sparsity settings whose value is itself a list (given as a list of lists, they are an axis).
_LIST_SETTINGS = frozenset(k for k, tp in typing.get_type_hints(SparsityConfig).items() if _is_tuple_type(tp))


def _expand_sparsity(raw: Any) -> tuple[SparsityConfig, ...]:
    """Expand the `sparsity` section: every key given as a list becomes one grid axis.

    A setting that is a list by nature (a tuple-typed field: `keep_dense`, `hybrid_ratios`)
    becomes an axis only when given as a list of lists.
    """
    if raw is None:
        return ()
    if isinstance(raw, list):  # already expanded (a resolved config written by dump_config)
        return tuple(entry for item in raw for entry in _expand_sparsity(item))
    if not isinstance(raw, dict):
        raise ConfigError(f"config error: sparsity must be a mapping of settings, not {raw!r}")
    axes: dict[str, list[Any]] = {}
    fixed: dict[str, Any] = {}
    for key, value in raw.items():
        is_axis = isinstance(value, list) and (key not in _LIST_SETTINGS or (value and isinstance(value[0], list)))
        if is_axis:
            if not value:
                raise ConfigError(f"config error: sparsity.{key} is an empty list; give at least one value")
            axes[key] = value
        else:
            fixed[key] = value
    entries = []
    for combo in itertools.product(*axes.values()):
        entry = _build(SparsityConfig, {**fixed, **dict(zip(axes, combo, strict=True))}, "sparsity")
        if entry.method != "none":
            entries.append(entry)
    unique = list(dict.fromkeys(entries))
    return tuple(unique)


def dataclass_from_mapping(cls: type, raw: Any, path: str) -> Any:
    """Build the frozen dataclass `cls` from a mapping, checking keys and types against its hints.

    Any section-like dataclass (e.g. an external model card) gets the experiment file's checks
    and one-line `ConfigError`s; `path` prefixes the key names in messages (e.g. "model card").
    """
    return _build(cls, raw, path)


def _build(cls: type, raw: Any, path: str) -> Any:
    """Build dataclass `cls` from `raw`, checking keys and types against its type hints."""
    where = path or "the top level"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"config error: {where} must be a mapping of keys, not {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [key for key in raw if key not in fields]
    if unknown:
        key = unknown[0]
        name = f"{path}.{key}" if path else str(key)
        raise ConfigError(f"config error: unknown key {name!r}; allowed keys in {where}: {', '.join(fields)}")
    kwargs = {}
    for key, value in raw.items():
        name = f"{path}.{key}" if path else key
        kwargs[key] = _coerce(value, hints[key], name)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config error: {where}: {exc}") from None


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return "one of " + ", ".join(str(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is tuple:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string", dict: "a mapping"}.get(
        tp, str(tp)
    )


def _coerce(value: Any, tp: Any, name: str) -> Any:
    """Check `value` against type hint `tp`; return it in the dataclass's representation."""
    origin = typing.get_origin(tp)
    bad = ConfigError(f"config error: {name} = {value!r} is not allowed; expected {_type_name(tp)}")
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed or isinstance(value, bool) != isinstance(allowed[0], bool):
            raise ConfigError(
                f"config error: {name} = {value!r} is not allowed; allowed values: {', '.join(map(str, allowed))}"
            )
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, name)
            except ConfigError:
                continue
        raise bad
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise bad
        item_type = typing.get_args(tp)[0]
        return tuple(_coerce(item, item_type, f"{name}[{i}]") for i, item in enumerate(value))
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, name)
    if tp is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if tp is float:
        if isinstance(value, str) and _EXPONENT_FLOAT.match(value.strip()):
            return float(value)  # YAML 1.1 reads 1e6 or 5e-4 (no dot) as text; they are numbers
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if tp is str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise bad
        return str(value)
    if tp is dict:
        if not isinstance(value, dict):
            raise bad
        return value
    raise TypeError(f"unsupported type hint {tp!r} for {name}")  # a schema bug, not user input


def config_to_dict(config: Any) -> Any:
    """A plain, JSON/YAML-able view of a config (tuples become lists)."""
    if dataclasses.is_dataclass(config):
        return {f.name: config_to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, (list, tuple)):
        return [config_to_dict(v) for v in config]
    if isinstance(config, dict):
        return {k: config_to_dict(v) for k, v in config.items()}
    return config


def dump_config(config: ExperimentConfig) -> str:
    """The resolved configuration as YAML text (loadable again with `load_config`)."""
    return yaml.safe_dump(config_to_dict(config), sort_keys=False)


def config_digest(config: Any, length: int = 12) -> str:
    """A stable short hash of a config (or any part of it): same settings, same digest."""
    text = json.dumps(config_to_dict(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def experiment_digest(config: ExperimentConfig) -> str:
    """The digest of what an experiment computes: every section but `execution` (how it runs).

    Two runs with the same experiment digest write the same files and results, whichever executor,
    cluster or resources ran them, so a run folder is resumed across them.
    """
    parts = config_to_dict(config)
    parts.pop("execution", None)
    return config_digest(parts)
