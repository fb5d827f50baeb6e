"""Stage 1 of the pipeline: train every model of an experiment into `<run_dir>/models/`.

Finished models (same digest) are found on disk and skipped; an unfinished one resumes from
its last finished epoch.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from reports.contract import MODELS_DIR
from robustsparse.checkpoints import read_meta
from robustsparse.config import ExperimentConfig
from robustsparse.data import DatasetBundle
from robustsparse.train.jobs import experiment_jobs
from robustsparse.train.trainer import is_finished, load_job_data, train_job

__all__ = ["load_experiment_data", "train_experiment", "SUMMARY_COLUMNS"]

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
]


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
) -> pd.DataFrame:
    """Train (or find finished) every model of `cfg`; return one summary row per model.

    Args:
        cfg: the experiment.
        run_dir: the run folder; models go to `<run_dir>/models/<model_id>/`.
        device: where to train.
        bundle: the loaded dataset (default: loaded when a model needs training).
        progress: show progress bars.

    Returns:
        DataFrame with SUMMARY_COLUMNS; `status` is `trained` or `found` (skipped, already on disk).
    """
    models_root = Path(run_dir) / MODELS_DIR
    jobs = experiment_jobs(cfg)
    rows = []
    # disable=None: bars on terminals only, not in logs or CI output
    bar = tqdm(jobs, desc="models", unit="model", disable=None if progress else True, dynamic_ncols=True)
    for job in bar:
        bar.set_postfix_str(job.model_id)
        model_dir = models_root / job.model_id
        if is_finished(model_dir, job):
            meta, status = read_meta(model_dir), "found"
            log.info("%s: finished model found on disk, skipped", job.model_id)
        else:
            if bundle is None:  # load the data only when something needs training
                bundle = load_experiment_data(cfg)
            meta, status = (
                train_job(job, model_dir, device=device, bundle=bundle, models_root=models_root, progress=progress),
                "trained",
            )
        rows.append({**{k: meta.get(k) for k in SUMMARY_COLUMNS if k != "status"}, "status": status})
    bar.close()
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
