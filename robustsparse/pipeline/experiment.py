"""The whole pipeline for one experiment: train every model, attack every model, write the report.

Each stage is resumable on its own (finished models and finished evaluations are found on disk),
so the run as a whole is too: started again, it recomputes nothing that is done.

Example:
    >>> cfg = load_config("configs/digits-quick.yaml")
    >>> summary = run_experiment(cfg, "runs/digits-quick", device=torch.device("cpu"))
    >>> summary.report_path
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from reports.atomic import write_csv_atomic
from reports.contract import MODELS_DIR, OUTCOMES_FILE, RESULTS_FILE, SANITY_FILE
from robustsparse.config import ExperimentConfig
from robustsparse.data import DatasetBundle
from robustsparse.errors import ConfigError
from robustsparse.pipeline.evaluation import EvalSettings, collect_results
from robustsparse.pipeline.ray_executor import ray_train_and_evaluate
from robustsparse.pipeline.run_dir import prepare_run_dir
from robustsparse.pipeline.training import (
    STATUS_FAILED,
    failed_reason,
    load_experiment_data,
    train_experiment,
)
from robustsparse.train.distributed import DistContext
from robustsparse.train.jobs import experiment_jobs
from robustsparse.train.trainer import DEVICE_CACHE_UNDER_TORCHRUN, refuse_under_torchrun

__all__ = ["RunSummary", "attack_experiment", "run_experiment", "prepare_distributed"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSummary:
    """What a pipeline run did and where its outputs are."""

    run_dir: Path
    models: pd.DataFrame
    results: pd.DataFrame
    report_path: Path | None
    n_trained: int
    n_evaluated: int
    seconds: float

    def failed(self) -> pd.DataFrame:
        """The models that failed to train (`model_id`, `failure`): they have no results."""
        return self.models.loc[self.models["status"] == STATUS_FAILED, ["model_id", "failure"]].reset_index(drop=True)

    def headline(self) -> pd.DataFrame:
        """Per model with results: clean accuracy and the robust accuracy of the strongest attack at the largest eps.

        Failed models have no results and are not in it (see `failed`).
        """
        res = self.results
        clean = res[res["attack"] == "clean"].set_index("model_id")["accuracy"].rename("clean_acc")
        attacked = res[res["attack"] != "clean"]
        if attacked.empty:
            return clean.reset_index()
        top_eps = attacked["eps"].max()
        worst = (
            attacked[attacked["eps"] == top_eps]
            .groupby("model_id")["accuracy"]
            .min()
            .rename(f"robust_acc@eps={top_eps:.4g}")
        )
        models = self.models[self.models["status"] != STATUS_FAILED]
        table = models.set_index("model_id")[["granularity", "target_sparsity", "achieved_sparsity"]]
        return table.join(clean).join(worst).reset_index()


def attack_experiment(
    cfg: ExperimentConfig,
    run_dir: str | Path,
    *,
    device: torch.device,
    bundle: DatasetBundle | None = None,
    progress: bool = True,
    skip: Collection[str] = (),
) -> tuple[pd.DataFrame, int]:
    """Attack every finished model of `cfg` and write `results.csv`, `outcomes.csv.gz`, `sanity.csv`.

    Models marked failed (diverged training) are skipped: they have no weights worth attacking;
    so are the model ids in `skip` (e.g. those whose Ray task failed).

    Returns:
        `(results, n_computed)`: the tidy results table and how many (model, spec) evaluations
        were computed now (0 when everything was on disk).
    """
    run_dir = Path(run_dir)
    bundle = bundle if bundle is not None else load_experiment_data(cfg)  # attacks read only the test split
    model_dirs = []
    for job in experiment_jobs(cfg):
        if job.model_id in skip:
            continue
        model_dir = run_dir / MODELS_DIR / job.model_id
        reason = failed_reason(model_dir)
        if reason is not None:
            log.warning("%s: not attacked, its training failed (%s)", job.model_id, reason)
            continue
        model_dirs.append(model_dir)
    settings = EvalSettings(cfg.attack.n_examples, cfg.attack.batch_size, cfg.attack.seed, cfg.attack.sanity_checks)
    results, outcomes, sanity, computed = collect_results(
        model_dirs, cfg.attack.attack_specs(), settings, bundle=bundle, device=device, progress=progress
    )
    write_csv_atomic(run_dir / OUTCOMES_FILE, outcomes)
    write_csv_atomic(run_dir / SANITY_FILE, sanity)
    write_csv_atomic(run_dir / RESULTS_FILE, results)
    return results, computed


def prepare_distributed(
    cfg: ExperimentConfig, run_dir: str | Path, *, restart: bool, distributed: DistContext
) -> tuple[DatasetBundle, Path]:
    """The dataset and the run folder under torchrun: rank 0 loads (downloads) and writes first.

    Raises:
        ConfigError: a method of the grid cannot train under torchrun, or `data.device_cache` is on
            (before anything is written).
    """
    for entry in cfg.sparsity:
        refuse_under_torchrun(entry.method)
    if cfg.data.device_cache:
        raise ConfigError(DEVICE_CACHE_UNDER_TORCHRUN)
    with distributed.main_first():
        bundle = load_experiment_data(cfg)
        if distributed.is_main:
            run_dir = prepare_run_dir(cfg, run_dir, restart=restart)
    return bundle, Path(run_dir)


def run_experiment(
    cfg: ExperimentConfig,
    run_dir: str | Path,
    *,
    device: torch.device,
    restart: bool = False,
    progress: bool = True,
    report: bool = True,
    distributed: DistContext | None = None,
) -> RunSummary:
    """Train, attack and report one experiment into `run_dir` (resuming whatever is on disk).

    With `cfg.execution.executor == "ray"`, training and attacks run as Ray tasks
    (`pipeline.ray_executor`, with the resources of `cfg.execution`); the tables and the report are
    then assembled here from their cached evaluations, as without Ray.

    Under torchrun (`distributed` with a world size > 1) all ranks train every model together;
    rank 0 alone then attacks and reports, and the other ranks return a summary with no results.
    """
    started = time.perf_counter()
    if cfg.execution.executor == "ray" and distributed is not None and distributed.world_size > 1:
        raise ConfigError("execution.executor = 'ray' cannot run under torchrun: start it as a plain command")
    if distributed is None or distributed.world_size == 1:
        bundle = load_experiment_data(cfg)  # before anything is written: a missing dataset leaves no trace
        run_dir = prepare_run_dir(cfg, run_dir, restart=restart)
    else:
        bundle, run_dir = prepare_distributed(cfg, run_dir, restart=restart, distributed=distributed)
    if cfg.execution.executor == "ray":
        models, failed, computed, _ = ray_train_and_evaluate(cfg, run_dir, progress=progress)
        # every evaluation is cached now: this only reads and assembles them (computes nothing)
        results, _ = attack_experiment(cfg, run_dir, device=device, bundle=bundle, progress=False, skip=failed)
    else:
        models = train_experiment(
            cfg, run_dir, device=device, bundle=bundle, progress=progress, distributed=distributed
        )
        if distributed is not None and not distributed.is_main:
            return RunSummary(run_dir, models, pd.DataFrame(), None, 0, 0, time.perf_counter() - started)
        results, computed = attack_experiment(cfg, run_dir, device=device, bundle=bundle, progress=progress)
    report_path = None
    if report:
        from reports import build_report

        report_path = build_report(run_dir)
    return RunSummary(
        run_dir,
        models,
        results,
        report_path,
        int((models["status"] == "trained").sum()),
        computed,
        time.perf_counter() - started,
    )
