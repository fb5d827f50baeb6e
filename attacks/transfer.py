"""Transfer attacks: adversarial examples crafted on a source model, scored on target models.

Typical use: craft on the dense model, score on its sparse descendants (and back). Every example
is attacked on the source, with every step (no early stopping: fooling the source is not the
goal); each target is scored with fresh predictions, and an example the target gets wrong on
clean input counts as not robust for it. Each target gets an ``EvaluationResult`` with the same
tables as ``evaluate``.
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
from attacks.result import EvaluationResult
from attacks.spec import DEFAULT_SEED

__all__ = ["transfer", "TransferResult"]


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
        """``EvaluationResult.to_frame()`` of every target, with ``source`` and ``target`` columns first."""
        frames = [r.to_frame(confidence).assign(source=self.source, target=name) for name, r in self.results.items()]
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
