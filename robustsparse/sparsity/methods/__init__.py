"""Sparsification methods, one module each, registered by name (`get_method`, `list_methods`).

A new method is one module that builds a `Method` (see `base`) and calls `register`; import it
here so the registry knows it.

Example:
    >>> method = get_method("random")
    >>> pruner = method.build_pruner(model, cfg, steps_per_epoch, seed)
"""

import functools
from collections.abc import Callable

import torch
from torch import nn

from robustsparse.sparsity.methods import (  # noqa: F401  (registers them)
    campfire,
    dnr,
    drop_pruning,
    dst,
    haloc,
    hybrid,
    hydra,
    npn,
    pconv,
    psconv,
    random,
    snip,
    structadmm,
    synflow,
)
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
    "extra_training",
    "weight_updates",
]


def build_pruner(
    model: nn.Module,
    cfg: SparsityConfig,
    steps_per_epoch: int,
    seed: int,
    example_batch: Callable[..., tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> Pruner:
    """The pruner of `cfg.method` for `model` (the trainer's one entry point).

    Args:
        example_batch: draws training examples `(inputs, labels)`: called once, and only for a
            method that `needs_data` (the others never cost a batch); with no argument one
            training batch, with a count (a method's `data_examples`) that many examples.

    Raises:
        ConfigError: `cfg.method` is not registered.
        ValueError: the method needs data and `example_batch` is not given.
    """
    method = get_method(cfg.method)
    if method.needs_data:
        if example_batch is None:
            raise ValueError(f"method {method.name!r} needs one batch of training data: pass example_batch")
        batch = example_batch() if method.data_examples is None else example_batch(method.data_examples(cfg))
        return method.build_pruner(model, cfg, steps_per_epoch, seed, example_batch=batch)
    return method.build_pruner(model, cfg, steps_per_epoch, seed)


def extra_training(
    cfg: SparsityConfig, pruner: Pruner
) -> tuple[torch.optim.Optimizer | None, Callable[[], torch.Tensor | None] | None]:
    """What the training loop adds for `cfg.method` beyond the model's own optimisation.

    Returns:
        (the optimiser of the method's extra trainable state, held by the pruner: the loop zeroes
        its gradients with the model's and steps it after every backward pass; a callable giving
        the extra loss of the latest training forward pass, added to the cross-entropy, None
        when there is none that step). Either is None when the method has none.
    """
    method = get_method(cfg.method)
    optimizer = method.extra_state(pruner) if method.extra_state is not None else None
    loss = functools.partial(method.loss_term, pruner) if method.loss_term is not None else None
    return optimizer, loss


def weight_updates(cfg: SparsityConfig, pruner: Pruner) -> Callable[[], bool] | None:
    """Whether the next optimizer step updates the model's weights, asked before every step.

    Returns:
        A callable, for a method that trains only its own state for a while (`Method.trains_weights`:
        the trainer then skips the model optimiser's step); None when the weights always train.
    """
    method = get_method(cfg.method)
    return functools.partial(method.trains_weights, pruner) if method.trains_weights is not None else None
