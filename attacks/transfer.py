"""Transfer attacks: adversarial examples crafted on a source model, scored on target models.

Typical use: craft on the dense model, score on its sparse descendants (and back). Every example
the source classifies correctly is attacked on the source, with every step (no early stopping:
fooling the source is not the goal). One semantics for every attack: an example's adversarial
example is the attack's output where it fools the source, its clean image elsewhere (torchattacks'
APGD, FAB and Square return the clean image where they fail, FGSM and PGD the perturbed one; this
makes them mean the same). Each target is scored with fresh predictions, and an example the target
gets wrong on clean input counts as not robust for it.

Per example, ``source_correct`` and ``source_fooled`` are recorded (``outcomes_frame``). Per spec
and target, ``to_frame`` gives the transfer accuracy over all N examples (``accuracy``) and the
transfer rate conditional on source success: among examples that fooled the source and that the
target classifies correctly on clean input, the fraction that also fool the target
(``transfer_rate``, with a Wilson interval). Perturbation norms are over source-fooled examples.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from attacks.batching import prepare_specs, run, tensor_batches
from attacks.errors import AttackInputError
from attacks.evaluate import SpecsLike
from attacks.metrics import wilson_interval
from attacks.result import EvaluationResult
from attacks.spec import DEFAULT_SEED

__all__ = ["transfer", "TransferResult", "TRANSFER_COLUMNS"]

TRANSFER_COLUMNS = (
    "n_source_correct",
    "n_source_fooled",
    "n_transfer_base",
    "transfer_rate",
    "transfer_ci_low",
    "transfer_ci_high",
)
"""Columns ``TransferResult.to_frame()`` adds after ``FRAME_COLUMNS``."""


@dataclass
class TransferResult:
    """Outcomes on every target of examples crafted on one source.

    Attributes:
        source: name of the source model.
        results: target name -> its ``EvaluationResult`` (``meta`` holds source and target names).
    """

    source: str
    results: dict[str, EvaluationResult]

    def __getitem__(self, target: str) -> EvaluationResult:
        try:
            return self.results[target]
        except KeyError:
            raise KeyError(f"no target {target!r}; targets: {', '.join(self.results)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.results)

    def to_frame(self, confidence: float = 0.95) -> pd.DataFrame:
        """``EvaluationResult.to_frame()`` of every target, ``source`` and ``target`` first, ``TRANSFER_COLUMNS`` last.

        ``accuracy`` is the transfer accuracy over all N; ``n_source_correct`` and ``n_source_fooled``
        count the source's clean-correct and fooled examples; ``transfer_rate`` is the fraction of
        the ``n_transfer_base`` examples (source fooled, target clean-correct) that fool the target,
        ``transfer_ci_low``/``transfer_ci_high`` its Wilson interval (NaN when the base is empty).
        """
        frames = []
        for name, r in self.results.items():
            frame = r.to_frame(confidence).assign(source=self.source, target=name)
            extra = []
            for o in r:
                base = o.fooled & r.clean_correct
                n_base, n_moved = int(base.sum()), int((base & ~o.correct).sum())
                low, high = wilson_interval(n_moved, n_base, confidence) if n_base else (math.nan, math.nan)
                extra.append(
                    {
                        "n_source_correct": int(r.source_correct.sum()),  # type: ignore[union-attr]
                        "n_source_fooled": int(o.fooled.sum()),
                        "n_transfer_base": n_base,
                        "transfer_rate": n_moved / n_base if n_base else math.nan,
                        "transfer_ci_low": low,
                        "transfer_ci_high": high,
                    }
                )
            frames.append(pd.concat([frame, pd.DataFrame(extra, columns=list(TRANSFER_COLUMNS))], axis=1))
        frame = pd.concat(frames, ignore_index=True)
        return frame[["source", "target", *[c for c in frame.columns if c not in ("source", "target")]]]

    def outcomes_frame(self) -> pd.DataFrame:
        """Per-example outcomes of every target, with ``source`` and ``target`` columns first."""
        frames = [r.outcomes_frame().assign(source=self.source, target=name) for name, r in self.results.items()]
        frame = pd.concat(frames, ignore_index=True)
        return frame[["source", "target", *[c for c in frame.columns if c not in ("source", "target")]]]


def transfer(
    source_model: nn.Module,
    target_models: Mapping[str, nn.Module],
    images: torch.Tensor,
    labels: torch.Tensor,
    specs: SpecsLike,
    *,
    source_name: str = "source",
    batch_size: int = 256,
    seed: int = DEFAULT_SEED,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> TransferResult:
    """Craft adversarial examples on ``source_model`` and score them on every target.

    Args:
        source_model: model the attacks see (white-box on it).
        target_models: name -> model scored on the crafted examples; include the source itself
            under some name to get its white-box numbers from the same examples.
        images: (N, C, H, W) in [0, 1]; ``labels``: (N,).
        specs: attacks (see ``evaluate``); ``clean`` is added.
        source_name: label of the source in the tables.
        batch_size, seed, device, progress: as for ``evaluate``; all models must be on ``device``.

    Returns:
        A ``TransferResult``; ``result[target].to_frame()`` per target, ``result.to_frame()`` for all.

    Raises:
        AttackInputError: no targets, or models on different devices. Otherwise as ``evaluate``.
    """
    if not target_models:
        raise AttackInputError("transfer needs at least one target model, e.g. {'sparse': model}")
    parsed = prepare_specs(specs)
    ok = isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size > 0
    batches = tensor_batches(images, labels, batch_size) if ok else iter(())
    results = run(
        source_model,
        dict(target_models),
        batches,
        parsed,
        seed=seed,
        device=device,
        efficient=True,
        transfer=True,
        batch_size=batch_size,
        progress=progress,
        total=math.ceil(len(images) / batch_size) if ok else None,
    )
    for name, result in results.items():
        result.meta.update({"source": source_name, "target": name})
    return TransferResult(source=source_name, results=results)
