"""Evaluation results: per-example outcomes per spec, and their tidy tables.

``EvaluationResult`` keeps, for every spec, which examples are still classified correctly under
the attack, which examples were attacked (the clean-correct ones), which of them fooled the model
the attack was crafted on (the source), the Linf and L2 norms of the attack's output, and the time
taken. ``to_frame()`` is the tidy table, one row per spec; ``outcomes_frame()`` the long
per-example table used for paired comparisons and norm thresholds.

One semantics for every attack: an example's adversarial example is the attack's output where it
fools the source model, and its clean image elsewhere (torchattacks' APGD, APGD-T, FAB and Square
return the clean image where they fail, FGSM and PGD the perturbed one; this makes them agree).
Perturbation norms are statistics over the fooled examples only.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from attacks.errors import AttackSpecError
from attacks.metrics import (
    attack_success_rate,
    ensemble_correct,
    mcnemar_test,
    success_rate_interval,
    wilson_interval,
)
from attacks.spec import AttackSpec

__all__ = [
    "AttackOutcome",
    "EvaluationResult",
    "FRAME_COLUMNS",
    "OUTCOME_COLUMNS",
    "ENSEMBLE_COLUMNS",
    "paired_comparison",
]

FRAME_COLUMNS = (
    "key",
    "attack",
    "norm",
    "eps",
    "eps_label",
    "steps",
    "alpha",
    "restarts",
    "seed",
    "options",
    "eps_kind",
    "batch_size",
    "n_examples",
    "n_correct",
    "accuracy",
    "ci_low",
    "ci_high",
    "n_clean_correct",
    "clean_accuracy",
    "attack_success_rate",
    "asr_ci_low",
    "asr_ci_high",
    "n_fooled",
    "linf_max",
    "l2_mean",
    "l2_median",
    "elapsed_s",
)
"""Columns of ``EvaluationResult.to_frame()``, in order."""

OUTCOME_COLUMNS = (
    "key",
    "attack",
    "norm",
    "eps",
    "eps_label",
    "example",
    "label",
    "correct",
    "source_correct",
    "source_fooled",
    "perturbation_norm",
)
"""Columns of ``EvaluationResult.outcomes_frame()``, in order."""

ENSEMBLE_COLUMNS = ("norm", "eps", "eps_label", "attacks", "n_examples", "n_correct", "accuracy", "ci_low", "ci_high")
"""Columns of ``EvaluationResult.ensemble_frame()``, in order."""


@dataclass(frozen=True)
class AttackOutcome:
    """Per-example outcome of one spec.

    Attributes:
        spec: the attack.
        seed: the seed it ran with (the spec's own, else the evaluation's).
        correct: (N,) bool, correct under attack; always False where the clean prediction is wrong.
        attacked: (N,) bool, whether the example was attacked (clean-correct ones, or all for
            ``efficient=False``); False for every example of ``clean``.
        fooled: (N,) bool, the attack's output fools the source model on an example the source
            classifies correctly (white-box: the model itself). Only there is the output scored;
            elsewhere the example's clean image is.
        linf: (N,) Linf norm of the attack's output minus the image (0 where not attacked); ``l2`` likewise.
        elapsed_s: wall time of this spec. Specs computed together (an FGSM sweep, stacked PGD eps)
            share their time evenly; the clean pass, which also yields the FGSM gradient when an
            FGSM sweep is evaluated, is counted for ``clean``.
    """

    spec: AttackSpec
    seed: int
    correct: np.ndarray
    attacked: np.ndarray
    fooled: np.ndarray
    linf: np.ndarray
    l2: np.ndarray
    elapsed_s: float

    @property
    def n_examples(self) -> int:
        """N, the denominator of the accuracy."""
        return int(self.correct.shape[0])

    @property
    def n_correct(self) -> int:
        """Examples still correct under the attack."""
        return int(self.correct.sum())

    @property
    def accuracy(self) -> float:
        """Robust accuracy over all N examples."""
        return self.n_correct / self.n_examples if self.n_examples else math.nan

    @property
    def perturbation_norm(self) -> np.ndarray:
        """(N,) norm of the perturbation in the spec's threat model where the source was fooled, NaN elsewhere.

        For a minimum-norm attack, robust accuracy at a threshold ``t`` is the fraction of examples
        that are clean-correct and not fooled within ``t``: ``clean & ~(perturbation_norm <= t)``.
        """
        norms = self.linf if self.spec.norm == "Linf" else self.l2
        return np.where(self.fooled, norms, np.nan)


@dataclass
class EvaluationResult:
    """Outcomes of several specs on the same N examples.

    Attributes:
        outcomes: spec key -> outcome, in evaluation order (``clean`` first).
        labels: (N,) true labels.
        clean_correct: (N,) correct on clean input.
        example_ids: (N,) identifiers of the examples (positions unless given).
        n_classes: number of logits of the model.
        source_correct: (N,) correct on clean input for the model the attacks were crafted on
            (the model itself for white-box results; ``None`` means ``clean_correct``).
        batch_size: the batch size the attacks ran with. The fast attacks and ``cw`` give the same
            result at any batch size; torchattacks' randomised attacks (square, apgd_*, fab,
            autoattack) draw per batch, so their results depend on it: it is recorded per row.
        meta: free-form metadata (e.g. ``{"source": ..., "target": ...}`` for transfer results).
    """

    outcomes: dict[str, AttackOutcome]
    labels: np.ndarray
    clean_correct: np.ndarray
    example_ids: np.ndarray
    n_classes: int
    source_correct: np.ndarray | None = None
    batch_size: int | None = None
    meta: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.source_correct is None:
            self.source_correct = self.clean_correct

    # ------------------------------------------------------------------ access
    @property
    def specs(self) -> list[AttackSpec]:
        """The evaluated specs, in order."""
        return [o.spec for o in self.outcomes.values()]

    @property
    def n_examples(self) -> int:
        """N."""
        return int(self.labels.shape[0])

    @property
    def clean_accuracy(self) -> float:
        """Accuracy on clean input over all N."""
        return float(self.clean_correct.mean()) if self.n_examples else math.nan

    def __getitem__(self, spec: AttackSpec | str) -> AttackOutcome:
        key = spec.key if isinstance(spec, AttackSpec) else AttackSpec.parse(spec).key
        try:
            return self.outcomes[key]
        except KeyError:
            raise KeyError(f"{key!r} was not evaluated; evaluated: {', '.join(self.outcomes)}") from None

    def __contains__(self, spec: object) -> bool:
        if isinstance(spec, AttackSpec):
            return spec.key in self.outcomes
        if not isinstance(spec, str):
            return False
        try:
            return spec in self.outcomes or AttackSpec.parse(spec).key in self.outcomes
        except AttackSpecError:
            return False

    def __iter__(self) -> Iterator[AttackOutcome]:
        return iter(self.outcomes.values())

    def __len__(self) -> int:
        return len(self.outcomes)

    # ------------------------------------------------------------------ tables
    def to_frame(self, confidence: float = 0.95) -> pd.DataFrame:
        """Tidy table, one row per spec, columns ``FRAME_COLUMNS``.

        ``accuracy = n_correct / n_examples`` over all N; ``ci_low``/``ci_high`` its Wilson
        interval; ``attack_success_rate`` over the ``n_clean_correct`` examples, with its Wilson
        interval ``asr_ci_low``/``asr_ci_high``; ``eps_kind`` is ``clean``, ``bounded`` or
        ``minimum_norm``; ``n_fooled`` the examples whose adversarial example fooled the source;
        ``linf_max``, ``l2_mean``, ``l2_median`` over those fooled examples only (NaN when none).
        """
        n_clean = int(self.clean_correct.sum())
        rows = []
        for o in self.outcomes.values():
            low, high = wilson_interval(o.n_correct, o.n_examples, confidence)
            asr_low, asr_high = success_rate_interval(self.clean_correct, o.correct, confidence)
            linf, l2 = o.linf[o.fooled], o.l2[o.fooled]
            spec = o.spec
            rows.append(
                {
                    "key": spec.key,
                    "attack": spec.name,
                    "norm": spec.norm,
                    "eps": spec.eps,
                    "eps_label": spec.eps_label,
                    "steps": spec.steps,
                    "alpha": spec.alpha,
                    "restarts": spec.restarts,
                    "seed": o.seed,
                    "options": ",".join(f"{k}={v}" for k, v in spec.options),  # type: ignore[misc]
                    "eps_kind": spec.eps_kind,
                    "batch_size": self.batch_size,
                    "n_examples": o.n_examples,
                    "n_correct": o.n_correct,
                    "accuracy": o.accuracy,
                    "ci_low": low,
                    "ci_high": high,
                    "n_clean_correct": n_clean,
                    "clean_accuracy": self.clean_accuracy,
                    "attack_success_rate": attack_success_rate(self.clean_correct, o.correct),
                    "asr_ci_low": asr_low,
                    "asr_ci_high": asr_high,
                    "n_fooled": int(o.fooled.sum()),
                    "linf_max": float(linf.max()) if linf.size else math.nan,
                    "l2_mean": float(l2.mean()) if l2.size else math.nan,
                    "l2_median": float(np.median(l2)) if l2.size else math.nan,
                    "elapsed_s": o.elapsed_s,
                }
            )
        frame = pd.DataFrame(rows, columns=list(FRAME_COLUMNS))
        for col in ("steps", "restarts", "seed", "batch_size"):
            frame[col] = frame[col].astype("Int64")
        return frame

    def outcomes_frame(self) -> pd.DataFrame:
        """Long table, one row per spec x example: ``OUTCOME_COLUMNS``.

        ``source_fooled`` is ``AttackOutcome.fooled``; ``perturbation_norm`` the norm of the
        perturbation in the spec's threat model where the source was fooled (NaN elsewhere).
        """
        parts = []
        for o in self.outcomes.values():
            spec = o.spec
            parts.append(
                pd.DataFrame(
                    {
                        "key": spec.key,
                        "attack": spec.name,
                        "norm": spec.norm,
                        "eps": spec.eps,
                        "eps_label": spec.eps_label,
                        "example": self.example_ids,
                        "label": self.labels,
                        "correct": o.correct,
                        "source_correct": self.source_correct,
                        "source_fooled": o.fooled,
                        "perturbation_norm": o.perturbation_norm,
                    }
                )
            )
        if not parts:
            return pd.DataFrame(columns=list(OUTCOME_COLUMNS))
        return pd.concat(parts, ignore_index=True)[list(OUTCOME_COLUMNS)]

    def ensemble_correct(self, keys: Sequence[AttackSpec | str] | None = None) -> np.ndarray:
        """Per-example worst case over the given specs (all non-clean ones by default)."""
        chosen = [self[k] for k in keys] if keys is not None else [o for o in self if not o.spec.is_clean]
        return ensemble_correct(self.clean_correct, *(o.correct for o in chosen))

    def ensemble_frame(self, confidence: float = 0.95) -> pd.DataFrame:
        """Worst case over all attacks at each (norm, eps): one row each, columns ``ENSEMBLE_COLUMNS``."""
        groups: dict[tuple[str, float], list[AttackOutcome]] = {}
        for o in self:
            if not o.spec.is_clean:
                groups.setdefault((o.spec.norm, o.spec.eps), []).append(o)  # type: ignore[arg-type]
        rows = []
        for (norm, eps), members in sorted(groups.items(), key=lambda item: (item[0][0], item[0][1])):
            correct = ensemble_correct(self.clean_correct, *(o.correct for o in members))
            n_correct = int(correct.sum())
            low, high = wilson_interval(n_correct, self.n_examples, confidence)
            rows.append(
                {
                    "norm": norm,
                    "eps": eps,
                    "eps_label": members[0].spec.eps_label,
                    "attacks": ",".join(o.spec.key for o in members),
                    "n_examples": self.n_examples,
                    "n_correct": n_correct,
                    "accuracy": n_correct / self.n_examples if self.n_examples else math.nan,
                    "ci_low": low,
                    "ci_high": high,
                }
            )
        return pd.DataFrame(rows, columns=list(ENSEMBLE_COLUMNS))


def paired_comparison(a: EvaluationResult, b: EvaluationResult, keys: Sequence[str] | None = None) -> pd.DataFrame:
    """McNemar's exact test per spec between two models evaluated on the same examples.

    Args:
        a: result of model A (e.g. dense); ``b`` of model B (e.g. sparse).
        keys: spec keys to compare; default every key both results have.

    Returns:
        One row per key: ``key, n_examples, accuracy_a, accuracy_b, difference (b - a), only_a,
        only_b, p_value``.

    Raises:
        ValueError: the results are not on the same examples (ids and labels must match).
    """
    if not (np.array_equal(a.example_ids, b.example_ids) and np.array_equal(a.labels, b.labels)):
        raise ValueError("paired_comparison needs both results on the same examples in the same order")
    chosen = list(keys) if keys is not None else [k for k in a.outcomes if k in b.outcomes]
    rows = []
    for key in chosen:
        test = mcnemar_test(a[key].correct, b[key].correct)
        rows.append(
            {
                "key": key,
                "n_examples": test.n_examples,
                "accuracy_a": test.accuracy_a,
                "accuracy_b": test.accuracy_b,
                "difference": test.accuracy_b - test.accuracy_a,
                "only_a": test.only_a,
                "only_b": test.only_b,
                "p_value": test.p_value,
            }
        )
    return pd.DataFrame(
        rows, columns=["key", "n_examples", "accuracy_a", "accuracy_b", "difference", "only_a", "only_b", "p_value"]
    )
