"""Sparsification methods, one module each, registered by name (`get_method`, `list_methods`).

A new method is one module that builds a `Method` (see `base`) and calls `register`; import it
here so the registry knows it.

Example:
    >>> method = get_method("random")
    >>> pruner = method.build_pruner(model, cfg, steps_per_epoch, seed)
"""

from torch import nn

from robustsparse.sparsity.methods import campfire, psconv, random  # noqa: F401  (registers them)
from robustsparse.sparsity.methods.base import WHEN_VALUES, Method, Pruner, When
from robustsparse.sparsity.methods.registry import METHOD_NONE, get_method, list_methods, method_names, register
from robustsparse.sparsity.settings import SparsityConfig

__all__ = [
    "Method",
    "Pruner",
    "When",
    "WHEN_VALUES",
    "METHOD_NONE",
    "register",
    "get_method",
    "list_methods",
    "method_names",
    "build_pruner",
]


def build_pruner(model: nn.Module, cfg: SparsityConfig, steps_per_epoch: int, seed: int) -> Pruner:
    """The pruner of `cfg.method` for `model` (the trainer's one entry point).

    Raises:
        ConfigError: `cfg.method` is not registered.
        NotImplementedError: the method has extra trainable state or a loss term, which the
            trainer does not wire in yet (refused rather than silently left out).
    """
    method = get_method(cfg.method)
    if method.extra_state is not None or method.loss_term is not None:
        raise NotImplementedError(
            f"method {method.name!r} has extra trainable state or a loss term; the trainer does not wire these in yet"
        )
    return method.build_pruner(model, cfg, steps_per_epoch, seed)
