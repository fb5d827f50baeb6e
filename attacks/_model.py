"""Model handling while attacking: eval mode and frozen parameters, restored afterwards; device; logits.

Attacks run with the model in ``eval()`` (BatchNorm statistics, no dropout) and with parameter
gradients switched off (attacks need input gradients only; this also keeps ``cw`` and
``deepfool``, which call ``backward()``, from writing into the caller's ``.grad``). Every module's
own ``training`` flag and every parameter's ``requires_grad`` are put back afterwards, also when
the attack raises.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from attacks.errors import AttackInputError

__all__ = ["attack_mode", "resolve_device", "logits_of", "predict"]


@contextmanager
def attack_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode with parameter gradients off; restore both on exit.

    Example:
        >>> with attack_mode(model):
        ...     x_adv = attack(images, labels)
    """
    modes = [(module, module.training) for module in model.modules()]
    grads = [(param, param.requires_grad) for param in model.parameters()]
    try:
        model.eval()
        for param, _ in grads:
            param.requires_grad_(False)
        yield model
    finally:
        for module, training in modes:
            module.training = training
        for param, requires_grad in grads:
            param.requires_grad_(requires_grad)


def resolve_device(model: nn.Module, device: str | torch.device | None) -> torch.device:
    """The device to evaluate on: ``device`` if given, else the model's (CPU for a parameter-free model).

    Raises:
        AttackInputError: the model's parameters live on another device than ``device``.
    """
    params = list(model.parameters()) + list(model.buffers())
    model_devices = {p.device for p in params}
    if device is None:
        return next(iter(model_devices)) if len(model_devices) == 1 else torch.device("cpu")
    try:
        target = torch.device(device)
    except (RuntimeError, TypeError):
        raise AttackInputError(f"bad device {device!r}; use e.g. 'cpu' or 'cuda:0'") from None
    if target.type == "cuda" and target.index is None:
        target = torch.device("cuda", torch.cuda.current_device() if torch.cuda.is_available() else 0)
    wrong = sorted(str(d) for d in model_devices if d != target)
    if wrong:
        raise AttackInputError(
            f"model is on {', '.join(wrong)} but device={str(target)!r}; move it first with model.to({str(target)!r})"
        )
    return target


def logits_of(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """``model(images)`` checked to be an ``(N, C)`` logits tensor.

    Raises:
        AttackInputError: the model returns something else.
    """
    out = model(images)
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != images.shape[0]:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise AttackInputError(f"the model must return (N, classes) logits for N images, got {shape}")
    return out


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, max_rows: int) -> torch.Tensor:
    """Predicted classes of ``images`` under ``no_grad``, ``max_rows`` at a time (model mode as is)."""
    if len(images) == 0:
        return torch.empty(0, dtype=torch.long, device=images.device)
    return torch.cat([logits_of(model, chunk).argmax(1) for chunk in images.split(max_rows)])
