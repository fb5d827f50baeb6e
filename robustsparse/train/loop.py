"""One training epoch and one evaluation pass; no file I/O, no decisions about what to save.

`train_one_epoch` calls `on_step_end(global_step)` after every optimizer step, which is where
the sparse trainer re-applies its masks (and zeroes masked momentum) so a pruned weight is
exactly zero at every step.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from robustsparse.errors import TrainingDiverged
from robustsparse.train.adversarial import RobustLoss

__all__ = ["train_one_epoch", "loss_and_accuracy", "autocast_for"]


def autocast_for(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on CUDA when enabled (no loss scaling needed); a no-op elsewhere."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _to_device(images: torch.Tensor, labels: torch.Tensor, device: torch.device, channels_last: bool):
    images = images.to(device, non_blocking=True)
    if channels_last and device.type == "cuda" and images.ndim == 4:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, labels.to(device, non_blocking=True)


def train_one_epoch(
    model: nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    *,
    device: torch.device,
    start_step: int = 0,
    label_smoothing: float = 0.0,
    amp: bool = False,
    channels_last: bool = False,
    on_step_end: Callable[[int], None] | None = None,
    robust_loss: RobustLoss | None = None,
    progress: bool = True,
    desc: str = "train",
    extra_loss: Callable[[], torch.Tensor | None] | None = None,
    extra_optimizer: torch.optim.Optimizer | None = None,
    update_weights: Callable[[], bool] | None = None,
) -> dict[str, float]:
    """Train for one pass over `loader`.

    Args:
        model: the network (put in train mode here).
        loader: yields (images in [0,1], labels).
        optimizer / scheduler: the scheduler is stepped once per batch.
        device: where to compute.
        start_step: optimizer steps taken before this epoch (for `on_step_end`).
        label_smoothing: cross-entropy label smoothing.
        amp / channels_last: CUDA-only speed-ups.
        on_step_end: called with the global step after every optimizer step.
        robust_loss: adversarial training (`train.adversarial`): the loss computed from the
            batch and the adversarial examples it crafts, in place of the plain cross-entropy.
        progress: show a tqdm bar with running loss and accuracy.
        extra_loss: a sparsification method's loss term for the forward pass just made (e.g.
            npn's gate penalty), added to the cross-entropy; it may return None (nothing added).
        extra_optimizer: the optimiser of a method's own trainable state: zeroed and stepped
            with `optimizer`.
        update_weights: asked before every step; False: `optimizer` does not step (a method
            training only its own state, e.g. hydra's score phase). None: it always steps.

    Returns:
        {"loss": mean training loss, "acc": training accuracy, "steps": steps taken,
        "adversarial_seconds": time spent crafting adversarial examples (0 without), and the sums
        behind them for an exact reduction over ranks: "loss_sum" (loss x examples), "correct", "n"}.

    Raises:
        TrainingDiverged: a batch's loss, or a weight at the end of the epoch, is not finite.
    """
    model.train()
    total_loss, correct, seen, step = 0.0, 0, 0, start_step
    if robust_loss is not None:
        robust_loss.take_seconds()  # this epoch's crafting time only
    # disable=None: bars on terminals only, not in logs or CI output
    bar = tqdm(loader, desc=desc, leave=False, disable=None if progress else True, dynamic_ncols=True)
    for images, labels in bar:
        images, labels = _to_device(images, labels, device, channels_last)
        if robust_loss is not None:  # crafts outside autocast; its forward passes run inside it
            loss, logits = robust_loss(
                model, images, labels, label_smoothing=label_smoothing, autocast=lambda: autocast_for(device, amp)
            )
        with autocast_for(device, amp):
            if robust_loss is None:
                logits = model(images)
                loss = F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)
            term = extra_loss() if extra_loss is not None else None
            if term is not None:
                loss = loss + term.float()
        loss_value = loss.item()
        if not math.isfinite(loss_value):  # diverged: stop before this update reaches the weights
            raise TrainingDiverged(f"non-finite training loss ({loss_value})", step + 1)
        optimizer.zero_grad(set_to_none=True)
        if extra_optimizer is not None:
            extra_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        weights_step = update_weights is None or update_weights()
        if weights_step:
            optimizer.step()
        if extra_optimizer is not None:
            extra_optimizer.step()
        if scheduler is not None and weights_step:
            scheduler.step()
        elif scheduler is not None:
            with warnings.catch_warnings():  # frozen on purpose: torch's "scheduler before optimizer" warning is moot
                warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)`")
                scheduler.step()
        step += 1
        if on_step_end is not None:
            on_step_end(step)
        batch = len(labels)
        total_loss += loss_value * batch
        correct += int((logits.argmax(1) == labels).sum())
        seen += batch
        bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.3f}")
    bar.close()
    # once per epoch: cheap, and catches what the loss missed (an unused weight, BatchNorm statistics)
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise TrainingDiverged(f"non-finite weights in {name}", step)
    return {
        "loss": total_loss / max(seen, 1),
        "acc": correct / max(seen, 1),
        "steps": step - start_step,
        "adversarial_seconds": robust_loss.take_seconds() if robust_loss is not None else 0.0,
        "loss_sum": total_loss,
        "correct": correct,
        "n": seen,
    }


@torch.no_grad()
def loss_and_accuracy(
    model: nn.Module,
    loader: Iterable,
    *,
    device: torch.device,
    amp: bool = False,
    channels_last: bool = False,
) -> dict[str, float]:
    """Loss and accuracy over `loader`, in eval mode; the model's previous mode is restored.

    Returns:
        {"loss": mean cross-entropy, "acc": accuracy, "n": number of examples, and the sums
        "loss_sum" (summed cross-entropy) and "correct", for an exact reduction over ranks}.
    """
    was_training = model.training
    model.eval()
    try:
        total_loss, correct, seen = 0.0, 0, 0
        for images, labels in loader:
            images, labels = _to_device(images, labels, device, channels_last)
            with autocast_for(device, amp):
                logits = model(images).float()
            total_loss += F.cross_entropy(logits, labels, reduction="sum").item()
            correct += int((logits.argmax(1) == labels).sum())
            seen += len(labels)
    finally:
        model.train(was_training)
    return {
        "loss": total_loss / max(seen, 1),
        "acc": correct / max(seen, 1),
        "n": seen,
        "loss_sum": total_loss,
        "correct": correct,
    }
