"""Stage 2 of the pipeline: attack every model, keep per-spec results beside each model.

Each model folder gets `eval/results.csv` and `eval/outcomes.csv.gz` (one block per attack spec,
tagged with an evaluation digest: the model's own digest, the examples and the attack seed).
Started again, only the specs missing for that digest are computed, so an interrupted sweep
loses nothing already finished. `collect_results` then joins every model's rows with its
metadata into the run's tidy `results.csv` (one row per model x attack spec), the per-example
`outcomes.csv.gz`, and `sanity.csv`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from attacks import FRAME_COLUMNS, AttackSpec, evaluate, sanity_checks, transfer, zero_gradient_fraction
from reports.atomic import write_csv_atomic
from reports.contract import (
    CHECKPOINT_FILE,
    EVAL_DIR,
    MODEL_COLUMNS,
    MODEL_COST_COLUMNS,
    OUTCOMES,
    OUTCOMES_FILE,
    RESULTS,
    RESULTS_FILE,
    SANITY,
    SANITY_FILE,
    cast_for_writing,
)
from robustsparse.checkpoints import load_checkpoint, read_meta
from robustsparse.config import config_digest
from robustsparse.data import DatasetBundle, load_dataset, load_tensors
from robustsparse.external import is_external, load_external_folder
from robustsparse.pipeline.claims import Claimed, claim

__all__ = [
    "EvalExamples",
    "EvalSettings",
    "collect_results",
    "dataset_of",
]

log = logging.getLogger(__name__)


class EvalExamples:
    """The evaluation examples of one dataset, decoded once however many models use them."""

    def __init__(self, bundle: DatasetBundle, n_examples: int | None) -> None:
        self.bundle = bundle
        self.n_examples = n_examples
        self._tensors: tuple[torch.Tensor, torch.Tensor] | None = None

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """`(images, labels)` of the fixed evaluation subset (loaded on first use)."""
        if self._tensors is None:
            self._tensors = load_tensors(self.bundle.test, self.n_examples)
        return self._tensors


class EvalSettings:
    """What decides an evaluation besides the spec: which examples and the attack seed."""

    def __init__(self, n_examples: int | None, batch_size: int, seed: int, sanity: bool = True) -> None:
        self.n_examples = n_examples
        self.batch_size = batch_size
        self.seed = seed
        self.sanity = sanity

    def digest(self, meta: dict[str, Any]) -> str:
        """Digest of the model (its config digest) and the examples/seed it is attacked on."""
        return config_digest(
            {
                "model": meta.get("config_digest"),
                "dataset": meta.get("dataset"),
                "n_examples": self.n_examples,
                "seed": self.seed,
            }
        )


def _read_cached(path: Path, digest: str) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    try:
        # a digest is text even when all its hex digits happen to be decimal ("157845232847")
        frame = pd.read_csv(path, keep_default_na=False, na_values=[""], dtype={"eval_digest": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError, UnicodeDecodeError, EOFError):
        log.warning("%s is unreadable; its evaluations will be recomputed", path)
        return None
    if "eval_digest" not in frame.columns:
        return None
    return frame[frame["eval_digest"] == digest]


def _append(old: pd.DataFrame | None, new: pd.DataFrame) -> pd.DataFrame:
    """`new` after the rows of `old` (if any); concatenating with nothing keeps `new`'s dtypes."""
    return new.reset_index(drop=True) if old is None or old.empty else pd.concat([old, new], ignore_index=True)


class _ModelFolder:
    """A model folder's metadata (read once) and its model (loaded at most once, when needed)."""

    def __init__(self, model_dir: str | Path, device: torch.device) -> None:
        self.path = Path(model_dir)
        self.meta = read_meta(self.path)
        self._device = device
        self._model: torch.nn.Module | None = None

    def model(self) -> torch.nn.Module:
        if self._model is None:
            if is_external(self.meta):  # imported from outside: loaded from its own file, by its card
                self._model = load_external_folder(self.meta, self._device)
            else:
                self._model, _ = load_checkpoint(self.path, device=self._device)
        return self._model


def _evaluate_folder(
    folder: _ModelFolder,
    specs: Sequence[AttackSpec],
    settings: EvalSettings,
    *,
    examples: EvalExamples,
    device: torch.device,
    progress: bool,
) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    model_dir, meta = folder.path, folder.meta
    digest = settings.digest(meta)
    results_path = model_dir / EVAL_DIR / RESULTS_FILE
    outcomes_path = model_dir / EVAL_DIR / OUTCOMES_FILE
    cached = _read_cached(results_path, digest)
    cached_outcomes = _read_cached(outcomes_path, digest)
    # Files written before a column was added are recomputed rather than read half-filled.
    if cached is not None and not set(FRAME_COLUMNS) <= set(cached.columns):
        cached = None
    if cached_outcomes is not None and "perturbation_norm" not in cached_outcomes.columns:
        cached_outcomes = None
    wanted = [spec.key for spec in specs]
    done = set()
    if cached is not None and cached_outcomes is not None:
        done = set(cached["key"]) & set(cached_outcomes["key"])
    missing = [spec for spec in specs if spec.key not in done]
    if missing:
        images, labels = examples.tensors()
        result = evaluate(
            folder.model(),
            images,
            labels,
            missing,
            batch_size=settings.batch_size,
            seed=settings.seed,
            device=device,
            progress=progress,
        )
        log.info(
            "%s: %d attack specs evaluated on %d examples in %.1f s",
            meta["model_id"],
            len(missing),
            len(labels),
            sum(o.elapsed_s for o in result),
        )
        new_rows = result.to_frame().assign(eval_digest=digest)
        new_outcomes = result.outcomes_frame()[["key", "example", "correct", "perturbation_norm"]].assign(
            eval_digest=digest
        )
        new_rows = new_rows[new_rows["key"].isin([s.key for s in missing])]
        all_rows = _append(cached, new_rows).drop_duplicates("key", keep="last")
        all_outcomes = _append(cached_outcomes, new_outcomes).drop_duplicates(["key", "example"], keep="last")
        # Outcomes first: results.csv naming a key promises its outcomes are on disk.
        write_csv_atomic(outcomes_path, all_outcomes)
        write_csv_atomic(results_path, all_rows)
        cached, cached_outcomes = all_rows, all_outcomes
    rows = cached[cached["key"].isin(wanted)].copy()
    outcomes = cached_outcomes[cached_outcomes["key"].isin(wanted)].copy()
    return rows, outcomes, len(missing)


# Bumped whenever the checks change what they compute (3: PGD transferred from the parent twin).
SANITY_VERSION = 3
# Attacks crafted on a twin: iterative white-box attacks must be at least as strong as transferred.
# Not FGSM: one linearised step can miss at a large eps where a twin's step lands, with no masking
# (seen on digits at 32/255: 38.9% white-box vs 36.4% transferred on a model that passes every other check).
TWIN_TRANSFER_ATTACKS = frozenset({"pgd"})


def _twin_transfer(
    folder: _ModelFolder,
    specs: Sequence[AttackSpec],
    settings: EvalSettings,
    examples: EvalExamples,
    device: torch.device,
) -> pd.DataFrame | None:
    """The model's gradient attacks crafted on its parent (a twin without this model's pruning) and scored on it.

    A model that masks its gradients is broken more easily through such a twin than white-box; the
    `whitebox_not_weaker_than_transfer` check compares the two. None when the model has no parent
    in the run (a dense model trained from scratch) or no gradient attack with an eps budget ran.
    """
    parent = folder.meta.get("parent")
    twin = folder.path.parent / str(parent) if parent else None
    chosen = [s for s in specs if s.name in TWIN_TRANSFER_ATTACKS and 0 < float(s.eps) < float("inf")]
    if twin is None or not (twin / CHECKPOINT_FILE).is_file() or not chosen:
        return None
    source, _ = load_checkpoint(twin, device=device)
    images, labels = examples.tensors()
    result = transfer(
        source,
        {folder.meta["model_id"]: folder.model()},
        images,
        labels,
        chosen,
        source_name=str(parent),
        batch_size=settings.batch_size,
        seed=settings.seed,
        device=device,
    )
    return result[folder.meta["model_id"]].to_frame()


def _model_sanity(
    folder: _ModelFolder,
    rows: pd.DataFrame,
    specs: Sequence[AttackSpec],
    settings: EvalSettings,
    examples: EvalExamples,
    device: torch.device,
) -> pd.DataFrame:
    """Sanity flags of one model (cached in eval/sanity.csv)."""
    meta = folder.meta
    # the checks' version is part of the digest: sanity flags cached by older checks are recomputed
    digest = settings.digest(meta) + ":" + config_digest([SANITY_VERSION, *sorted(rows["key"])])
    path = folder.path / EVAL_DIR / SANITY_FILE
    cached = _read_cached(path, digest)
    if cached is not None and len(cached) and set(SANITY.names) <= set(cached.columns):
        return cached[SANITY.names]
    images, labels = examples.tensors()
    zero_fraction = zero_gradient_fraction(folder.model(), images, labels, batch_size=settings.batch_size)
    twin = _twin_transfer(folder, [s for s in specs if s.key in set(rows["key"])], settings, examples, device)
    flags = sanity_checks(rows, zero_grad_fraction=zero_fraction, transfer=twin)
    # A check with nothing to compare is "not_run", never passed.
    frame = pd.DataFrame(
        [{"model_id": meta["model_id"], "check": f.name, "status": f.status, "evidence": f.evidence} for f in flags],
        columns=SANITY.names,
    )
    write_csv_atomic(path, frame.assign(eval_digest=digest))
    return frame


def dataset_of(meta: dict[str, Any], *, data_root: str | Path | None = None) -> DatasetBundle:
    """The test data a model was trained for, from its metadata (no augmentation).

    Args:
        meta: the model's metadata (its `data` entry holds the dataset settings it was trained with).
        data_root: a different folder holding the data (e.g. on another machine).
    """
    data = meta.get("data") or {}
    return load_dataset(
        data.get("dataset", meta.get("dataset")),
        root=data_root if data_root is not None else data.get("root", "data"),
        download=False,
        augment=False,
        split_seed=int(data.get("split_seed", 0)),
        image_size=data.get("image_size"),
    )


def collect_results(
    model_dirs: Sequence[Path],
    specs: Sequence[AttackSpec],
    settings: EvalSettings,
    *,
    bundle: DatasetBundle | None = None,
    device: torch.device,
    data_root: str | Path | None = None,
    progress: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, int]:
    """Evaluate every model (skipping what is on disk) and assemble the run's tables.

    Args:
        bundle: the dataset of every model; None reads each model's own dataset from its
            metadata (optionally under `data_root`).

    Returns:
        `(results, outcomes, sanity, n_computed)`: tables with the columns of `contract.RESULTS`,
        `contract.OUTCOMES` and `contract.SANITY`, and the number of (model, spec)
        evaluations computed in this call.
    """
    per_model: dict[Path, tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame | None]] = {}
    computed = 0
    shared = EvalExamples(bundle, settings.n_examples) if bundle is not None else None
    per_dataset: dict[str, EvalExamples] = {}
    # disable=None: bars on terminals only, not in logs or CI output
    bar = tqdm(
        total=len(model_dirs), desc="attacks", unit="model", disable=None if progress else True, dynamic_ncols=True
    )
    # Each model's evaluation is claimed (eval/.claim.lock): a model another process is attacking
    # is put off to a second pass that waits for it and then reads its cached results.
    deferred: list[Path] = []
    for wait, queue in ((False, list(model_dirs)), (True, deferred)):
        for model_dir in list(queue):
            folder = _ModelFolder(model_dir, device)  # metadata read once, model loaded at most once
            meta = folder.meta
            bar.set_postfix_str(meta["model_id"])
            examples = shared
            if examples is None:
                data_key = config_digest(meta.get("data") or meta.get("dataset"))
                if data_key not in per_dataset:
                    per_dataset[data_key] = EvalExamples(dataset_of(meta, data_root=data_root), settings.n_examples)
                examples = per_dataset[data_key]
            try:
                with claim(Path(model_dir) / EVAL_DIR, wait=wait):
                    rows, outcomes, n_new = _evaluate_folder(
                        folder, specs, settings, examples=examples, device=device, progress=False
                    )
                    flags = _model_sanity(folder, rows, specs, settings, examples, device) if settings.sanity else None
            except Claimed:
                deferred.append(model_dir)
                continue
            computed += n_new
            for column in (*MODEL_COLUMNS, *MODEL_COST_COLUMNS):
                rows[column] = meta.get(column)
            rows["config_digest"] = meta.get("config_digest")
            rows["variant"] = meta.get("variant") or ""
            per_model[Path(model_dir)] = (
                rows[RESULTS.names],
                outcomes.assign(model_id=meta["model_id"])[OUTCOMES.names],
                flags,
            )
            bar.update(1)
    bar.close()
    ordered = [per_model[Path(d)] for d in model_dirs]
    all_rows = [r for r, _, _ in ordered]
    all_outcomes = [o for _, o, _ in ordered]
    all_flags = [f for _, _, f in ordered if f is not None]
    results = cast_for_writing(
        pd.concat(all_rows, ignore_index=True) if all_rows else pd.DataFrame(columns=RESULTS.names), RESULTS
    )
    outcomes = pd.concat(all_outcomes, ignore_index=True) if all_outcomes else pd.DataFrame(columns=OUTCOMES.names)
    sanity = pd.concat(all_flags, ignore_index=True) if all_flags else pd.DataFrame(columns=SANITY.names)
    return results, outcomes, sanity, computed
