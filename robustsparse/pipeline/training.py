"""Stage 1 of the pipeline: train every model of an experiment into `<run_dir>/models/`.

Finished models (same digest) are found on disk and skipped; an unfinished one resumes from
its last finished epoch. A model whose training diverges (non-finite loss or weights) is stopped
and marked failed: its folder keeps the last good epoch's state (`last.pt`) and gets a
`meta.json` with `status: failed` and the reason, so the attack sweep and the report leave it out
and a rerun does not train it again; the models that start from it fail with it, the rest of
the grid goes on.

Under torchrun (`distributed` with a world size > 1) all ranks train the models one after another,
together: rank 0 alone takes each model's claim (waiting for it: another process on the folder
finishes its model first) and writes; every rank then reads the same folder state between two
barriers, so they all decide alike whether a model is found, failed or to be trained.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from reports.atomic import write_json_atomic
from reports.contract import META_FILE, MODELS_DIR, RESUME_STATE_FILE
from robustsparse.checkpoints import read_meta
from robustsparse.config import ExperimentConfig, config_to_dict
from robustsparse.data import DatasetBundle
from robustsparse.errors import CheckpointError, TrainingDiverged
from robustsparse.pipeline.claims import Claimed, claim
from robustsparse.train.distributed import DistContext
from robustsparse.train.jobs import TrainJob, experiment_jobs
from robustsparse.train.trainer import is_finished, load_job_data, train_job

__all__ = ["load_experiment_data", "train_experiment", "failed_reason", "SUMMARY_COLUMNS", "STATUS_FAILED"]

log = logging.getLogger(__name__)

SUMMARY_COLUMNS = [
    "model_id",
    "method",
    "granularity",
    "target_sparsity",
    "achieved_sparsity",
    "seed",
    "clean_acc",
    "status",
    "failure",
]

#: `status` of a model whose training diverged (in meta.json and the summary); the others are
#: `trained` (now) or `found` (finished on disk) in the summary, `trained` in meta.json.
STATUS_FAILED = "failed"


def load_experiment_data(cfg: ExperimentConfig) -> DatasetBundle:
    """The experiment's dataset (train split augmented as configured; the test split never is).

    Loaded before anything is written, so a missing dataset fails with nothing on disk.
    """
    return load_job_data(cfg.data)


def train_experiment(
    cfg: ExperimentConfig,
    run_dir: str | Path,
    *,
    device: torch.device,
    bundle: DatasetBundle | None = None,
    progress: bool = True,
    distributed: DistContext | None = None,
) -> pd.DataFrame:
    """Train (or find finished) every model of `cfg`; return one summary row per model.

    Args:
        cfg: the experiment.
        run_dir: the run folder; models go to `<run_dir>/models/<model_id>/`.
        device: where to train.
        bundle: the loaded dataset (default: loaded when a model needs training).
        progress: show progress bars.
        distributed: this process's rank under torchrun (process group joined), or None.

    Returns:
        DataFrame with SUMMARY_COLUMNS; `status` is `trained`, `found` (skipped, already on
        disk) or `failed` (diverged now or before, or its parent failed; `failure` says why).
    """
    models_root = Path(run_dir) / MODELS_DIR
    jobs = experiment_jobs(cfg)
    by_id = {job.model_id: job for job in jobs}
    rows: dict[str, dict] = {}
    failed: set[str] = set()
    state = {"bundle": bundle}
    if distributed is not None and distributed.world_size > 1:
        return _train_together(
            cfg, jobs, by_id, models_root, state, device=device, progress=progress, distributed=distributed
        )
    # disable=None: bars on terminals only, not in logs or CI output
    bar = tqdm(total=len(jobs), desc="models", unit="model", disable=None if progress else True, dynamic_ncols=True)
    # First pass: every job nobody else holds. Second pass: the jobs another process (or a parent
    # it holds) kept busy, waiting for each claim in turn; most are then found finished.
    deferred: list[TrainJob] = []
    for wait, queue in ((False, jobs), (True, deferred)):
        for job in list(queue):
            bar.set_postfix_str(job.model_id)
            parent = by_id.get(job.parent_id) if job.parent_id is not None else None
            if not wait and parent is not None and parent.model_id not in failed and parent.model_id not in rows:
                deferred.append(job)  # its parent is being trained elsewhere
                continue
            try:
                with claim(models_root / job.model_id, wait=wait):
                    row, status = _settle(
                        cfg, job, parent, models_root, failed, state, device=device, progress=progress
                    )
            except Claimed:
                deferred.append(job)
                continue
            if status == STATUS_FAILED:
                failed.add(job.model_id)
            rows[job.model_id] = row
            bar.update(1)
    bar.close()
    return pd.DataFrame([rows[job.model_id] for job in jobs], columns=SUMMARY_COLUMNS)


def _train_together(
    cfg: ExperimentConfig,
    jobs: list[TrainJob],
    by_id: dict[str, TrainJob],
    models_root: Path,
    state: dict,
    *,
    device: torch.device,
    progress: bool,
    distributed: DistContext,
) -> pd.DataFrame:
    """`train_experiment` under torchrun: every job in order, all ranks at once (see the module)."""
    rows: dict[str, dict] = {}
    failed: set[str] = set()
    for job in jobs:
        parent = by_id.get(job.parent_id) if job.parent_id is not None else None
        holder = claim(models_root / job.model_id, wait=True) if distributed.is_main else nullcontext()
        with holder:
            distributed.barrier()  # rank 0 holds the claim: the folder is settled for everyone to read
            row, status = _settle(
                cfg, job, parent, models_root, failed, state, device=device, progress=progress, distributed=distributed
            )
            distributed.barrier()  # everything rank 0 wrote is there before anyone reads the next job
        if status == STATUS_FAILED:
            failed.add(job.model_id)
        rows[job.model_id] = row
    return pd.DataFrame([rows[job.model_id] for job in jobs], columns=SUMMARY_COLUMNS)


def _settle(
    cfg: ExperimentConfig,
    job: TrainJob,
    parent: TrainJob | None,
    models_root: Path,
    failed: set[str],
    state: dict,
    *,
    device: torch.device,
    progress: bool,
    distributed: DistContext | None = None,
) -> tuple[dict, str]:
    """Find, fail or train one model (its claim held); return its summary row and status."""
    model_dir = models_root / job.model_id
    reason = _failed_before(model_dir, job)
    if reason is not None:
        meta, status = read_meta(model_dir), STATUS_FAILED
        log.warning("%s: failed in an earlier run (%s), skipped", job.model_id, reason)
    elif parent is not None and (
        parent.model_id in failed or _failed_before(models_root / parent.model_id, parent) is not None
    ):  # failed here, or in another process working on this folder
        reason = f"its parent {job.parent_id} failed"
        meta, status = (
            _mark_failed(model_dir, job, reason, write=distributed is None or distributed.is_main),
            STATUS_FAILED,
        )
        log.warning("%s: not trained, %s", job.model_id, reason)
    elif is_finished(model_dir, job):
        meta, status = read_meta(model_dir), "found"
        log.info("%s: finished model found on disk, skipped", job.model_id)
    else:
        if state["bundle"] is None:  # load the data only when something needs training
            state["bundle"] = load_experiment_data(cfg)
        try:
            meta = train_job(
                job,
                model_dir,
                device=device,
                bundle=state["bundle"],
                models_root=models_root,
                progress=progress,
                distributed=distributed,
            )
            status = "trained"
        except TrainingDiverged as exc:
            reason = str(exc)
            # under torchrun, weights gone non-finite stop every rank at the same step (DDP keeps them
            # alike); a non-finite loss on one rank's batch alone stops that rank only, and the
            # collectives of the others then fail: torchrun ends the job, last.pt is kept
            meta, status = (
                _mark_failed(model_dir, job, reason, write=distributed is None or distributed.is_main),
                STATUS_FAILED,
            )
            kept = "last good epoch kept in " + str(model_dir / RESUME_STATE_FILE)
            if not (model_dir / RESUME_STATE_FILE).is_file():
                kept = "no epoch finished"
            log.error("%s: %s; model marked failed (%s), the rest of the grid goes on", job.model_id, reason, kept)
    row = {k: meta.get(k) for k in SUMMARY_COLUMNS if k not in ("status", "failure")}
    return {**row, "status": status, "failure": meta.get("failure") or ""}, status


def failed_reason(model_dir: str | Path) -> str | None:
    """Why the model in `model_dir` failed (its meta.json has `status: failed`), or None."""
    path = Path(model_dir) / META_FILE
    if not path.is_file():
        return None
    try:
        meta = read_meta(model_dir)
    except CheckpointError:
        return None
    return str(meta.get("failure") or "failed") if meta.get("status") == STATUS_FAILED else None


def _failed_before(model_dir: Path, job: TrainJob) -> str | None:
    """The reason this very job (same digest) failed in an earlier run, or None."""
    reason = failed_reason(model_dir)
    if reason is None or read_meta(model_dir).get("config_digest") != job.digest:
        return None
    return reason


def _mark_failed(model_dir: Path, job: TrainJob, reason: str, *, write: bool = True) -> dict:
    """Write the failed model's meta.json (what it is, `status: failed`, why) and return it.

    `write=False` (a rank other than 0 under torchrun) only returns it.

    No model.pt is written, so nothing can load or attack it; the fields the report needs to
    name the model are there.
    """
    sparsity = job.sparsity
    meta = {
        "model_id": job.model_id,
        "arch": job.model.arch,
        "dataset": job.data.label or job.data.dataset,
        "method": job.method,
        "granularity": "dense" if sparsity is None else sparsity.granularity,
        "target_sparsity": 0.0 if sparsity is None else float(sparsity.target_sparsity),
        "achieved_sparsity": None,
        "seed": job.seed,
        "epochs": job.train.epochs,
        "variant": job.variant,
        "parent": job.parent_id,
        "reference_model_id": job.reference_id,
        "status": STATUS_FAILED,
        "failure": reason,
        "config_digest": job.digest,
        "train": config_to_dict(job.train),
    }
    if write:
        model_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(model_dir / META_FILE, meta)
    return meta
