"""The batching loop shared by ``evaluate``, ``evaluate_loader`` and ``transfer``.

For every batch: clean predictions; then, per group of specs, adversarial pieces crafted on the
source model (``fast_attacks``, ``carlini_wagner`` or torchattacks) for the examples the source
classifies correctly, each piece checked (shape, finite, [0, 1], eps ball). The source's prediction
on the piece says which examples it fooled; every target then scores, with fresh predictions in eval
mode under ``no_grad``, the attack's output where the source was fooled and the clean image elsewhere
(one semantics for every attack, see ``attacks.result``). For ``evaluate`` the source is the target.
An attack at eps = 0 is run like any other (never replaced by the identity), so the
``eps0_equals_clean`` sanity check tests the attack.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from attacks._model import attack_mode, logits_of, predict, resolve_device
from attacks.carlini_wagner import carlini_wagner_l2
from attacks.checks import check_adversarial, enforce_budget
from attacks.errors import AttackInputError
from attacks.fast_attacks import ITERATIVE, Piece, derive_seed, fgsm_sweep, input_grad, iterative, uniform_noise
from attacks.registry import build_torchattack
from attacks.result import AttackOutcome, EvaluationResult
from attacks.spec import AttackSpec, parse_specs

__all__ = ["Batch", "prepare_specs", "tensor_batches", "loader_batches", "run"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Batch:
    """Images in [0, 1] and labels, with the global number of the first example."""

    images: torch.Tensor
    labels: torch.Tensor
    offset: int


def prepare_specs(specs: Iterable[AttackSpec | str | Mapping[str, object]] | AttackSpec | str) -> list[AttackSpec]:
    """Parsed, de-duplicated specs with ``clean`` first (added when missing)."""
    parsed = parse_specs(specs)  # type: ignore[arg-type]
    clean = AttackSpec.clean()
    return [clean] + [s for s in parsed if not s.is_clean]


def _check_batch(images: object, labels: object, offset: int) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(images, torch.Tensor) or not images.is_floating_point() or images.ndim != 4:
        desc = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
        raise AttackInputError(f"images must be a float NCHW tensor in [0, 1], got {desc}")
    integer = isinstance(labels, torch.Tensor) and not labels.is_floating_point() and labels.dtype != torch.bool
    if not integer or labels.ndim != 1:  # type: ignore[union-attr]
        desc = f"{labels.dtype} {tuple(labels.shape)}" if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise AttackInputError(f"labels must be a 1-d integer tensor, got {desc}")
    if len(labels) != len(images):
        raise AttackInputError(f"{len(images)} images but {len(labels)} labels (batch starting at example {offset})")
    if images.numel():
        low, high = float(images.min()), float(images.max())
        if low < 0 or high > 1:
            raise AttackInputError(
                f"images must be in [0, 1] (models normalise inside), got min {low:.4g} and max {high:.4g} "
                f"in the batch starting at example {offset}"
            )
    return images, labels.long()


def tensor_batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> Iterator[Batch]:
    """Consecutive slices of ``batch_size`` examples."""
    images, labels = _check_batch(images, labels, 0)
    for start in range(0, len(images), batch_size):
        yield Batch(images[start : start + batch_size], labels[start : start + batch_size], start)


def loader_batches(loader: Iterable[object], batch_size: int, max_examples: int | None) -> Iterator[Batch]:
    """Batches of a data loader yielding ``(images, labels, ...)``, re-cut to at most ``batch_size``."""
    seen = 0
    for item in loader:
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise AttackInputError(f"the loader must yield (images, labels, ...) pairs, got {type(item).__name__}")
        images, labels = _check_batch(item[0], item[1], seen)
        if max_examples is not None:
            images, labels = images[: max_examples - seen], labels[: max_examples - seen]
        for start in range(0, len(images), batch_size):
            yield Batch(images[start : start + batch_size], labels[start : start + batch_size], seen + start)
        seen += len(images)
        if max_examples is not None and seen >= max_examples:
            return


@dataclass(frozen=True)
class _Group:
    kind: str  # "clean", "fgsm", "iterative", "cw", "noise", "torchattacks"
    specs: tuple[AttackSpec, ...]


def _groups(specs: Sequence[AttackSpec], efficient: bool, seed_of: Mapping[str, int]) -> list[_Group]:
    groups: list[_Group] = []
    fgsm: list[AttackSpec] = []
    iters: dict[tuple[object, ...], list[AttackSpec]] = {}
    for spec in specs:
        if spec.is_clean:
            groups.append(_Group("clean", (spec,)))
        elif spec.name == "cw":
            groups.append(_Group("cw", (spec,)))
        elif spec.name == "noise":
            groups.append(_Group("noise", (spec,)))
        elif efficient and spec.name == "fgsm":
            fgsm.append(spec)
        elif efficient and spec.name in ITERATIVE:
            key = (spec.name, spec.norm, spec.steps, spec.restarts, spec.options, seed_of[spec.key])
            iters.setdefault(key, []).append(spec)
        else:
            groups.append(_Group("torchattacks", (spec,)))
    if fgsm:
        groups.append(_Group("fgsm", tuple(fgsm)))
    groups.extend(_Group("iterative", tuple(members)) for members in iters.values())
    return groups


class _Crafter:
    """Crafts adversarial pieces on the source model for one group of specs."""

    def __init__(
        self, model: nn.Module, device: torch.device, max_rows: int, early_stop: bool, seed_of: Mapping[str, int]
    ) -> None:
        self.model = model
        self.device = device
        self.max_rows = max_rows
        self.early_stop = early_stop
        self.seed_of = seed_of
        self.n_classes = 0
        self._attacks: dict[str, object] = {}

    def _seeded_key(self, spec: AttackSpec) -> str:
        # The key with the seed the spec runs with: a spec without its own seed derives the same
        # torchattacks seeds as the equal spec that names that seed (they share one key).
        return spec.key if spec.seed is not None else f"{spec.key},seed={self.seed_of[spec.key]}"

    def _torchattack(self, spec: AttackSpec) -> object:
        if spec.key not in self._attacks:
            if next(self.model.parameters(), None) is None:
                raise AttackInputError(f"{spec.name} runs through torchattacks, which needs a model with parameters")
            seed = derive_seed(self._seeded_key(spec), self.seed_of[spec.key]) % 2**31
            self._attacks[spec.key] = build_torchattack(self.model, spec, n_classes=self.n_classes, seed=seed)
        return self._attacks[spec.key]

    def pieces(self, group: _Group, batch: Batch, rows: torch.Tensor, grad: torch.Tensor | None) -> Iterator[Piece]:
        x, y = batch.images, batch.labels
        if group.kind == "noise":
            spec = group.specs[0]
            numbers = (rows.cpu() + batch.offset).tolist()
            yield Piece(spec, rows, uniform_noise(spec, x[rows], self.seed_of[spec.key], numbers))
        elif group.kind == "cw":
            spec = group.specs[0]
            for chunk in rows.split(self.max_rows):
                if len(chunk):
                    adversarial = carlini_wagner_l2(
                        self.model,
                        x[chunk],
                        y[chunk],
                        binary_search_steps=int(spec.option("binary_search_steps")),
                        steps=spec.steps or 1,
                        lr=float(spec.option("lr")),
                        c=float(spec.option("c")),
                        kappa=float(spec.option("kappa")),
                    )
                    yield Piece(spec, chunk, enforce_budget(x[chunk], adversarial, spec).detach())
        elif group.kind == "fgsm":
            yield from fgsm_sweep(self.model, x, y, group.specs, rows, max_rows=self.max_rows, grad=grad)
        elif group.kind == "iterative":
            index = torch.arange(batch.offset, batch.offset + len(x))
            seeds = [self.seed_of[s.key] for s in group.specs]
            yield from iterative(
                self.model,
                x,
                y,
                group.specs,
                rows,
                seeds=seeds,
                example_index=index,
                max_rows=self.max_rows,
                early_stop=self.early_stop,
            )
        else:
            spec = group.specs[0]
            attack = self._torchattack(spec)
            for chunk in rows.split(self.max_rows):
                if len(chunk) == 0:
                    continue
                devices = [self.device] if self.device.type == "cuda" else []
                # torchattacks draws from (and some attacks reseed) the global RNG: fork it so the
                # caller's random state is untouched, and seed it per chunk for reproducibility.
                with torch.random.fork_rng(devices=devices):
                    offset = batch.offset + int(chunk[0])
                    torch.manual_seed(derive_seed(self._seeded_key(spec), self.seed_of[spec.key], offset))
                    adversarial = attack(x[chunk], y[chunk])  # type: ignore[operator]
                adversarial = enforce_budget(x[chunk], adversarial.to(x.dtype), spec)
                yield Piece(spec, chunk, adversarial.detach())


class _Accumulator:
    """Per-spec outcome arrays of one target, filled batch by batch."""

    def __init__(self, specs: Sequence[AttackSpec]) -> None:
        self.specs = list(specs)
        self.parts: dict[str, dict[str, list[np.ndarray]]] = {
            s.key: {"correct": [], "attacked": [], "fooled": [], "linf": [], "l2": []} for s in specs
        }
        self.elapsed = {s.key: 0.0 for s in specs}
        self.current: dict[str, dict[str, np.ndarray]] = {}

    def start_batch(self, n: int) -> None:
        self.current = {
            s.key: {
                "correct": np.zeros(n, bool),
                "attacked": np.zeros(n, bool),
                "fooled": np.zeros(n, bool),
                "linf": np.zeros(n),
                "l2": np.zeros(n),
            }
            for s in self.specs
        }

    def record(
        self,
        spec: AttackSpec,
        rows: np.ndarray,
        correct: np.ndarray,
        fooled: np.ndarray,
        linf: np.ndarray,
        l2: np.ndarray,
    ) -> None:
        cur = self.current[spec.key]
        cur["correct"][rows] = correct
        cur["fooled"][rows] = fooled
        cur["attacked"][rows] = True
        cur["linf"][rows] = linf
        cur["l2"][rows] = l2

    def end_batch(self) -> None:
        for key, cur in self.current.items():
            for name, values in cur.items():
                self.parts[key][name].append(values)

    def outcomes(self, seed_of: Mapping[str, int]) -> dict[str, AttackOutcome]:
        out = {}
        for spec in self.specs:
            arrays = {
                name: np.concatenate(vals) if vals else np.zeros(0) for name, vals in self.parts[spec.key].items()
            }
            out[spec.key] = AttackOutcome(
                spec=spec,
                seed=seed_of[spec.key],
                correct=arrays["correct"].astype(bool),
                attacked=arrays["attacked"].astype(bool),
                fooled=arrays["fooled"].astype(bool),
                linf=arrays["linf"].astype(np.float64),
                l2=arrays["l2"].astype(np.float64),
                elapsed_s=self.elapsed[spec.key],
            )
        return out


def run(
    source: nn.Module,
    targets: Mapping[str, nn.Module],
    batches: Iterable[Batch],
    specs: Sequence[AttackSpec],
    *,
    seed: int,
    device: str | torch.device | None,
    efficient: bool,
    transfer: bool,
    batch_size: int,
    progress: bool,
    total: int | None = None,
    example_ids: np.ndarray | None = None,
) -> dict[str, EvaluationResult]:
    """Craft on ``source``, score on every target; one ``EvaluationResult`` per target name.

    Only examples the source gets right are attacked (every example with ``efficient=False``).
    ``transfer=False`` (white-box): the iterative attacks stop per example once fooled.
    ``transfer=True``: they run every step (fooling the source is not the goal).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise AttackInputError(f"batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise AttackInputError(f"seed must be a non-negative integer, got {seed!r}")
    dev = resolve_device(source, device)
    for model in targets.values():
        resolve_device(model, dev)
    seed_of = {s.key: (s.seed if s.seed is not None else seed) for s in specs}
    groups = _groups(specs, efficient, seed_of)
    crafter = _Crafter(source, dev, batch_size, early_stop=not transfer, seed_of=seed_of)
    accs = {name: _Accumulator(specs) for name in targets}
    labels_all: list[np.ndarray] = []
    source_all: list[np.ndarray] = []
    clean_all: dict[str, list[np.ndarray]] = {name: [] for name in targets}
    n_classes = 0

    iterator: Iterable[Batch] = batches
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(batches, total=total, desc="attacks", unit="batch")

    with ExitStack() as stack:
        for model in {id(m): m for m in [source, *targets.values()]}.values():
            stack.enter_context(attack_mode(model))
        for batch in iterator:
            x = batch.images.to(dev)
            y = batch.labels.to(dev)
            batch = Batch(x, y, batch.offset)
            n = len(x)
            if n == 0:
                continue
            t0 = time.perf_counter()
            if not n_classes:
                with torch.no_grad():
                    n_classes = int(logits_of(source, x[:1]).shape[1])
                crafter.n_classes = n_classes
            if int(y.min()) < 0 or int(y.max()) >= n_classes:
                raise AttackInputError(
                    f"labels must be in [0, {n_classes}) for a model with {n_classes} logits, "
                    f"got {int(y.min())}..{int(y.max())} in the batch starting at example {batch.offset}"
                )
            grad = None
            if any(g.kind == "fgsm" for g in groups):
                # The clean forward pass also gives the one gradient the FGSM sweep needs.
                source_logits, grad = input_grad(source, x, y, batch_size)
            else:
                with torch.no_grad():
                    source_logits = torch.cat([logits_of(source, c) for c in x.split(batch_size)])
            source_correct = source_logits.argmax(1) == y
            target_correct = {
                name: source_correct if model is source else predict(model, x, batch_size) == y
                for name, model in targets.items()
            }
            clean_time = time.perf_counter() - t0
            rows = source_correct.nonzero().squeeze(1) if efficient else torch.arange(n, device=dev)
            labels_all.append(y.cpu().numpy())
            source_all.append(source_correct.cpu().numpy())
            for name, acc in accs.items():
                acc.start_batch(n)
                clean_all[name].append(target_correct[name].cpu().numpy())

            for group in groups:
                t0 = time.perf_counter()
                if group.kind == "clean":
                    spec = group.specs[0]
                    for name, acc in accs.items():
                        acc.current[spec.key]["correct"][:] = clean_all[name][-1]
                        acc.elapsed[spec.key] += clean_time
                    continue
                for piece in crafter.pieces(group, batch, rows, grad):
                    orig, labels = x[piece.rows], y[piece.rows]
                    linf, l2 = check_adversarial(orig, piece.adversarial, piece.spec)
                    rows_np = piece.rows.cpu().numpy()
                    source_pred = predict(source, piece.adversarial, batch_size)
                    fooled = source_correct[piece.rows] & (source_pred != labels)
                    # The adversarial example is the output where it fools the source, else the clean image.
                    scored = torch.where(fooled.view(-1, *([1] * (orig.ndim - 1))), piece.adversarial, orig)
                    for name, model in targets.items():
                        pred = source_pred if model is source else predict(model, scored, batch_size)
                        correct = (pred == labels) & target_correct[name][piece.rows]
                        accs[name].record(
                            piece.spec,
                            rows_np,
                            correct.cpu().numpy(),
                            fooled.cpu().numpy(),
                            linf.cpu().numpy(),
                            l2.cpu().numpy(),
                        )
                share = (time.perf_counter() - t0) / len(group.specs)
                for acc in accs.values():
                    for spec in group.specs:
                        acc.elapsed[spec.key] += share
            for acc in accs.values():
                acc.end_batch()

    labels = np.concatenate(labels_all) if labels_all else np.zeros(0, dtype=np.int64)
    ids = np.arange(len(labels)) if example_ids is None else np.asarray(example_ids)
    if len(ids) != len(labels):
        raise AttackInputError(f"example_ids has {len(ids)} entries for {len(labels)} examples")
    results = {}
    for name, acc in accs.items():
        clean = np.concatenate(clean_all[name]) if clean_all[name] else np.zeros(0, dtype=bool)
        results[name] = EvaluationResult(
            outcomes=acc.outcomes(seed_of),
            labels=labels,
            clean_correct=clean.astype(bool),
            example_ids=ids,
            n_classes=n_classes,
            source_correct=np.concatenate(source_all).astype(bool) if source_all else np.zeros(0, dtype=bool),
            batch_size=batch_size,
        )
        for o in results[name]:
            log.debug(
                "%s on %s: accuracy %.4f (%d/%d) in %.2fs",
                o.spec.key,
                name,
                o.accuracy,
                o.n_correct,
                o.n_examples,
                o.elapsed_s,
            )
    return results
