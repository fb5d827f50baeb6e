"""The registry of sparsification methods: `register`, `get_method`, `list_methods`.

`none` (dense) is not a method: it is the absence of one. `METHOD_NONE` and
`method_names()` give the vocabulary of `sparsity.method`.
"""

from __future__ import annotations

from robustsparse.errors import ConfigError
from robustsparse.sparsity.methods.base import Method

__all__ = ["METHOD_NONE", "register", "get_method", "list_methods", "method_names"]

METHOD_NONE = "none"

_METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add `method` to the registry (once per name); returns it, for module-level use."""
    if method.name == METHOD_NONE or method.name in _METHODS:
        raise ValueError(f"method name {method.name!r} is taken")
    _METHODS[method.name] = method
    return method


def list_methods() -> list[Method]:
    """The registered methods in registration order."""
    return list(_METHODS.values())


def method_names() -> tuple[str, ...]:
    """The allowed values of `sparsity.method`: `none` and every registered method."""
    return (METHOD_NONE, *_METHODS)


def get_method(name: str) -> Method:
    """The method registered as `name`.

    Raises:
        ConfigError: no such method (one line naming the allowed values).
    """
    try:
        return _METHODS[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"config error: sparsity.method = {name!r} is not a method; allowed: {', '.join(_METHODS)}"
        ) from None
