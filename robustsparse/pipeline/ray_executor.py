"""The Ray executor: every training job and every model's attack evaluation as a Ray task.

Tasks run on an embedded local Ray (no address) or on a running cluster (`address="auto"` or
`HOST:PORT`). A child's training task takes its parent's ObjectRef as an argument, so Ray starts
it only once the parent's task finished; each model's evaluation task takes its training task's
ref the same way. Workers write model folders (and their `eval/` caches) into the run folder,
which on a cluster must be on a shared filesystem. Each task holds the folder's claim
(`pipeline.claims`), so Ray tasks and other processes on the same folder never do the same work
twice. The driver then collects the tables and the report from the cached evaluations exactly as
the local executor does (same code: `attack_experiment`), so the results are identical.

A task that raises, or whose worker dies, is retried once by Ray; then it is reported as failed
(it and the tasks that depend on it), and the rest of the grid goes on.

Ray is imported lazily: without it installed, `import_ray` raises `RayMissing`.
"""

from __future__ import annotations

import importlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from reports.contract import MODELS_DIR
from robustsparse.config import ExperimentConfig, config_digest
from robustsparse.data import DatasetBundle
from robustsparse.pipeline.claims import claim
from robustsparse.pipeline.evaluation import EvalSettings, collect_results
from robustsparse.pipeline.training import STATUS_FAILED, SUMMARY_COLUMNS, _settle, failed_reason, load_experiment_data
from robustsparse.train.jobs import TrainJob, experiment_jobs

__all__ = ["RAY_MODULE", "RayMissing", "RaySettings", "import_ray", "ray_train_and_evaluate"]

log = logging.getLogger(__name__)

#: the module imported as Ray (a module-level name so a test can point it at a missing module)
RAY_MODULE = "ray"


class RayMissing(ImportError):
    """Ray is not installed (the `ray` extra)."""


@dataclass(frozen=True)
class RaySettings:
    """Where Ray runs and what each task asks of it.

    Attributes:
        address: None starts an embedded local Ray; "auto" or "HOST:PORT" joins a running cluster.
        num_cpus: CPUs of the embedded Ray (None: the machine's); ignored when joining a cluster.
        train_cpus: CPUs requested by each training task.
        eval_cpus: CPUs requested by each evaluation task.
        gpus: GPUs requested by each task (0: CPU only; > 0 trains and attacks on `cuda`).
        torch_threads: torch threads in each task (1: N workers on N cores do not oversubscribe).
    """

    address: str | None = None
    num_cpus: int | None = None
    train_cpus: float = 1
    eval_cpus: float = 1
    gpus: float = 0
    torch_threads: int = 1


def import_ray() -> Any:
    """The `ray` module.

    Raises:
        RayMissing: Ray is not installed.
    """
    try:
        return importlib.import_module(RAY_MODULE)
    except ImportError:
        raise RayMissing("--executor ray needs Ray, which is not installed: pip install 'robustsparse[ray]'") from None


# Datasets loaded by this worker process, by config digest: a worker reused for several tasks loads once.
_BUNDLES: dict[str, DatasetBundle] = {}


def _bundle(cfg: ExperimentConfig) -> DatasetBundle:
    key = config_digest(cfg.data)
    if key not in _BUNDLES:
        _BUNDLES[key] = load_experiment_data(cfg)
    return _BUNDLES[key]


def _job(cfg: ExperimentConfig, model_id: str) -> tuple[TrainJob, TrainJob | None]:
    by_id = {job.model_id: job for job in experiment_jobs(cfg)}
    job = by_id[model_id]
    return job, by_id.get(job.parent_id) if job.parent_id is not None else None


def _train_one(
    cfg: ExperimentConfig, run_dir: str, model_id: str, device: str, threads: int, parent_done: Any = None
) -> dict:
    """Body of a training task: find, fail or train one model under its claim; its summary row.

    `parent_done` is the parent's task result, passed only so Ray orders the tasks.
    """
    started = time.time()
    torch.set_num_threads(threads)
    job, parent = _job(cfg, model_id)
    models_root = Path(run_dir) / MODELS_DIR
    key = config_digest(cfg.data)
    state = {"bundle": _BUNDLES.get(key)}  # _settle loads the data only when something needs training
    with claim(models_root / model_id, wait=True):  # another process holding it: wait, then find it done
        row, _ = _settle(cfg, job, parent, models_root, set(), state, device=torch.device(device), progress=False)
    if state["bundle"] is not None:
        _BUNDLES[key] = state["bundle"]
    return {**row, "started": started, "finished": time.time()}


def _evaluate_one(cfg: ExperimentConfig, run_dir: str, model_id: str, device: str, threads: int, trained: Any) -> int:
    """Body of an evaluation task: attack one model into its eval/ cache; the evaluations computed now."""
    torch.set_num_threads(threads)
    model_dir = Path(run_dir) / MODELS_DIR / model_id
    if trained.get("status") == STATUS_FAILED or failed_reason(model_dir) is not None:
        return 0
    settings = EvalSettings(cfg.attack.n_examples, cfg.attack.batch_size, cfg.attack.seed, cfg.attack.sanity_checks)
    *_, computed = collect_results(
        [model_dir],
        cfg.attack.attack_specs(),
        settings,
        bundle=_bundle(cfg),
        device=torch.device(device),
        progress=False,
    )
    return computed


def _failed_row(job: TrainJob, reason: str) -> dict:
    sparsity = job.sparsity
    return {
        "model_id": job.model_id,
        "method": job.method,
        "granularity": "dense" if sparsity is None else sparsity.granularity,
        "target_sparsity": 0.0 if sparsity is None else float(sparsity.target_sparsity),
        "achieved_sparsity": None,
        "seed": job.seed,
        "clean_acc": None,
        "status": STATUS_FAILED,
        "failure": reason,
    }


def _last_line(exc: BaseException) -> str:
    """The last line of a task's error (Ray's RayTaskError holds the whole remote traceback)."""
    text = str(exc).strip()
    return text.splitlines()[-1] if text else type(exc).__name__


def _start_ray(ray: Any, settings: RaySettings) -> bool:
    """Join or start Ray; True when this call started it (and must shut it down)."""
    if ray.is_initialized():
        return False
    env = {"env_vars": {"OMP_NUM_THREADS": str(settings.torch_threads)}}
    if settings.address is None:
        ray.init(num_cpus=settings.num_cpus, include_dashboard=False, runtime_env=env, log_to_driver=False)
    else:
        ray.init(address=settings.address, runtime_env=env, log_to_driver=False)
    return True


def ray_train_and_evaluate(
    cfg: ExperimentConfig, run_dir: str | Path, settings: RaySettings, *, progress: bool = True
) -> tuple[pd.DataFrame, dict[str, str], int, dict[str, tuple[float, float]]]:
    """Train every model of `cfg`, then attack each, as Ray tasks; wait for all of them.

    Returns:
        `(models, failed, n_computed, times)`: the training summary (SUMMARY_COLUMNS), the model
        ids whose task failed (after its retry) with why, the attack evaluations computed now, and
        each trained model's task `(start, end)` times (seconds since the epoch: the order it ran in).
    """
    ray = import_ray()
    started_here = _start_ray(ray, settings)
    try:
        return _submit_and_wait(ray, cfg, str(Path(run_dir).resolve()), settings, progress)
    finally:
        if started_here:
            ray.shutdown()


def _submit_and_wait(
    ray: Any, cfg: ExperimentConfig, run_dir: str, settings: RaySettings, progress: bool
) -> tuple[pd.DataFrame, dict[str, str], int, dict[str, tuple[float, float]]]:
    device = "cuda" if settings.gpus > 0 else "cpu"
    # retried once whatever ends it: an exception or a dead worker (divergence is no exception: _settle marks it)
    retry = {"max_retries": 1, "retry_exceptions": True, "num_gpus": settings.gpus}
    train_task = ray.remote(_train_one).options(num_cpus=settings.train_cpus, **retry)
    eval_task = ray.remote(_evaluate_one).options(num_cpus=settings.eval_cpus, **retry)
    jobs = experiment_jobs(cfg)  # parents come before their children
    train_refs: dict[str, Any] = {}
    for job in jobs:
        parent_ref = train_refs.get(job.parent_id) if job.parent_id is not None else None
        train_refs[job.model_id] = train_task.remote(
            cfg, run_dir, job.model_id, device, settings.torch_threads, parent_ref
        )
    eval_refs = {
        job.model_id: eval_task.remote(
            cfg, run_dir, job.model_id, device, settings.torch_threads, train_refs[job.model_id]
        )
        for job in jobs
    }
    what = {ref: ("train", mid) for mid, ref in train_refs.items()} | {
        ref: ("attack", mid) for mid, ref in eval_refs.items()
    }
    rows: dict[str, dict] = {}
    errors: dict[tuple[str, str], str] = {}  # (kind, model_id) -> why its task failed
    computed = 0
    pending = list(what)
    bar = tqdm(
        total=len(pending), desc="ray tasks", unit="task", disable=None if progress else True, dynamic_ncols=True
    )
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        kind, model_id = what[done[0]]
        try:
            value = ray.get(done[0])
        except Exception as exc:  # the task failed after its retry, or a task it depends on did
            errors[kind, model_id] = _last_line(exc)
            log.error("%s: %s task failed: %s", model_id, kind, errors[kind, model_id])
        else:
            if kind == "train":
                rows[model_id] = value
                log.info("%s: training task done (%s)", model_id, value["status"])
            else:
                computed += value
                log.info("%s: attack task done (%d evaluations computed)", model_id, value)
        bar.update(1)
    bar.close()
    failed: dict[str, str] = {}
    for job in jobs:  # parents first: a child's reason names its failed parent
        if job.parent_id in failed and ("train", job.model_id) in errors:
            failed[job.model_id] = f"its parent {job.parent_id} failed"
        elif ("train", job.model_id) in errors:
            failed[job.model_id] = "train task failed: " + errors["train", job.model_id]
        elif ("attack", job.model_id) in errors:
            failed[job.model_id] = "attack task failed: " + errors["attack", job.model_id]
    table = []
    for job in jobs:
        row = rows.get(job.model_id) or _failed_row(job, failed[job.model_id])
        if job.model_id in failed:  # trained, but its attack task failed: no results either
            row = {**row, "status": STATUS_FAILED, "failure": failed[job.model_id]}
        table.append(row)
    times = {mid: (row["started"], row["finished"]) for mid, row in rows.items()}
    return pd.DataFrame(table, columns=SUMMARY_COLUMNS), failed, computed, times
