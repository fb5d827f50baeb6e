"""White-box evaluation: ``evaluate`` on tensors and ``evaluate_loader`` on a data loader.

Both return an ``EvaluationResult`` with, per spec, the per-example outcome, the perturbation
norms of the adversarial examples actually returned and the time taken; ``clean`` is always
evaluated (first). The model is put in eval mode for the whole evaluation and its previous mode
restored afterwards, also on error. Examples the model gets wrong on clean input are not attacked
and count as not robust. Predictions are always recomputed from the returned adversarial
examples (eval mode, ``no_grad``), never taken from an attack's own success flag.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from attacks.batching import loader_batches, prepare_specs, run, tensor_batches
from attacks.errors import AttackInputError
from attacks.result import EvaluationResult
from attacks.spec import DEFAULT_SEED, AttackSpec

__all__ = ["evaluate", "evaluate_loader", "SpecsLike"]

SpecsLike = Iterable[AttackSpec | str | Mapping[str, object]] | AttackSpec | str
"""Specs, spec strings (``"pgd:eps=8/255"``) or mappings (an ``eps`` list expands to one spec per value)."""


def evaluate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    specs: SpecsLike,
    *,
    batch_size: int = 256,
    seed: int = DEFAULT_SEED,
    device: str | torch.device | None = None,
    progress: bool = False,
    efficient: bool = True,
    example_ids: Sequence[int] | np.ndarray | None = None,
) -> EvaluationResult:
    """Attack ``model`` on ``images`` with every spec and score the outcomes.

    Args:
        model: any ``nn.Module`` taking NCHW images in [0, 1] and returning logits (it normalises
            inside). Left on its device; its train/eval mode and ``requires_grad`` flags are restored.
        images: (N, C, H, W) float tensor in [0, 1].
        labels: (N,) integer labels.
        specs: attacks to run (see ``SpecsLike``); duplicates are dropped, ``clean`` is added.
        batch_size: most rows per forward/backward pass (eps stacked together count separately).
        seed: seed of randomised attacks whose spec has none.
        device: where to compute; default the model's device (it must already be there).
        progress: show a progress bar over batches.
        efficient: use ``attacks.fast_attacks`` (one-gradient FGSM sweeps, early-stopped iterative
            attacks, clean-wrong examples skipped). ``False`` runs every attack through its plain
            torchattacks object on every example (the reference path); ``cw`` and ``noise`` are
            this package's own on both paths.
        example_ids: identifiers of the examples for ``outcomes_frame`` (default 0..N-1).

    Returns:
        The per-spec outcomes; ``result.to_frame()`` is the tidy table.

    Raises:
        AttackSpecError: a bad spec. AttackInputError: bad images, labels, device or model output.
        AttackCheckError: an attack returned examples outside the eps ball or [0, 1].

    Example:
        >>> result = evaluate(model, x, y, ["fgsm:eps=8/255", "pgd:eps=8/255,steps=10"])
        >>> result.to_frame()[["key", "accuracy", "ci_low", "ci_high"]]
    """
    parsed = prepare_specs(specs)
    if example_ids is not None and isinstance(images, torch.Tensor) and len(example_ids) != len(images):
        raise AttackInputError(f"example_ids has {len(example_ids)} entries for {len(images)} images")
    batches = tensor_batches(images, labels, batch_size) if _positive(batch_size) else iter(())
    total = math.ceil(len(images) / batch_size) if _positive(batch_size) else None
    results = run(
        model,
        {"model": model},
        batches,
        parsed,
        seed=seed,
        device=device,
        efficient=efficient,
        transfer=False,
        batch_size=batch_size,
        progress=progress,
        total=total,
        example_ids=None if example_ids is None else np.asarray(example_ids),
    )
    return results["model"]


def evaluate_loader(
    model: nn.Module,
    loader: Iterable[object],
    specs: SpecsLike,
    *,
    max_examples: int | None = None,
    batch_size: int = 256,
    seed: int = DEFAULT_SEED,
    device: str | torch.device | None = None,
    progress: bool = False,
    efficient: bool = True,
) -> EvaluationResult:
    """Like ``evaluate``, over a loader yielding ``(images, labels, ...)`` batches.

    Args:
        loader: any iterable of ``(images, labels, ...)``, e.g. a ``DataLoader`` (keep
            ``shuffle=False`` for results comparable across models).
        max_examples: stop after this many examples (the first ones), e.g. 1000.
        Other arguments: as for ``evaluate``; loader batches larger than ``batch_size`` are cut.

    Returns:
        The per-spec outcomes; examples are numbered in loader order.
    """
    parsed = prepare_specs(specs)
    if max_examples is not None and not _positive(max_examples):
        raise AttackInputError(f"max_examples must be a positive integer or None, got {max_examples!r}")
    batches = loader_batches(loader, batch_size, max_examples) if _positive(batch_size) else iter(())
    results = run(
        model,
        {"model": model},
        batches,
        parsed,
        seed=seed,
        device=device,
        efficient=efficient,
        transfer=False,
        batch_size=batch_size,
        progress=progress,
    )
    return results["model"]


def _positive(batch_size: object) -> bool:
    # ``run`` reports a bad batch size; this only keeps the batch generators from failing first.
    return isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size > 0
