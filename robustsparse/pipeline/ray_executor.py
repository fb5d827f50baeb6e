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

What each task asks of Ray (CPUs, GPUs, memory per job kind), where Ray runs and the torch threads
of a task are the config's `execution` section (`ExecutionConfig`); none of it is part of a model's
digest or changes what is computed (except that the thread count changes float summation order).

Ray is imported lazily: without it installed, `import_ray` raises `RayMissing`.
"""

from __future__ import annotations

import importlib
import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from reports.contract import MODELS_DIR
from robustsparse.config import ExecutionConfig, ExperimentConfig, JobResources, config_digest
from robustsparse.data import DatasetBundle
from robustsparse.errors import ConfigError
from robustsparse.pipeline.claims import claim
from robustsparse.pipeline.evaluation import EvalSettings, collect_results
from robustsparse.pipeline.training import STATUS_FAILED, SUMMARY_COLUMNS, _settle, failed_reason, load_experiment_data
from robustsparse.train.jobs import TrainJob, experiment_jobs

__all__ = [
    "EVAL_TASK",
    "TRAIN_TASK",
    "RAY_MODULE",
    "RayMissing",
    "check_feasible",
    "import_ray",
    "ray_train_and_evaluate",
    "task_options",
]

log = logging.getLogger(__name__)

#: the names of the tasks, `train:<model_id>` and `attack:<model_id>`
TRAIN_TASK, EVAL_TASK = "train", "attack"

#: the module imported as Ray (a module-level name so a test can point it at a missing module)
RAY_MODULE = "ray"


class RayMissing(ImportError):
    """Ray is not installed (the `ray` extra)."""


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


def _start_ray(ray: Any, execution: ExecutionConfig) -> bool:
    """Join or start Ray; True when this call started it (and must shut it down)."""
    if ray.is_initialized():
        return False
    env = {"env_vars": {"OMP_NUM_THREADS": str(execution.worker_threads)}}
    if execution.ray_address is None:
        ray.init(num_cpus=execution.ray_num_cpus, include_dashboard=False, runtime_env=env, log_to_driver=False)
    else:
        ray.init(address=execution.ray_address, runtime_env=env, log_to_driver=False)
    return True


def task_options(resources: JobResources) -> dict[str, Any]:
    """Ray's `.options(...)` for a task of one kind: its CPUs, GPUs and memory, retried once.

    Retried once whatever ends it: an exception or a dead worker (divergence is no exception:
    `_settle` marks the model failed).
    """
    options: dict[str, Any] = {
        "num_cpus": resources.cpus,
        "num_gpus": resources.gpus,
        "max_retries": 1,
        "retry_exceptions": True,
    }
    if resources.memory_bytes is not None:
        options["memory"] = resources.memory_bytes
    return options


def check_feasible(ray: Any, execution: ExecutionConfig) -> None:
    """Refuse, with one line, a request that no node of the cluster can ever meet.

    Ray would otherwise keep such a task pending for ever ("infeasible"), and the run would hang.

    Raises:
        ConfigError: a job kind asks for more CPUs, GPUs or memory than the largest node has.
    """
    nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive", True)]
    for kind, resources in (("train", execution.train), ("eval", execution.eval)):
        wanted = {"CPU": resources.cpus, "GPU": resources.gpus, "memory": resources.memory_bytes or 0}
        for name, amount in wanted.items():
            largest = max((node.get(name, 0.0) for node in nodes), default=0.0)
            if amount > largest:
                key = {"CPU": "cpus", "GPU": "gpus", "memory": "memory_gb"}[name]
                have = f"{largest / 1e9:.1f} GB" if name == "memory" else f"{largest:g}"
                value = resources.memory_gb if name == "memory" else amount
                raise ConfigError(
                    f"execution.{kind}.{key} = {value:g} is more than any Ray node has ({have} on the largest); "
                    f"lower it (--set execution.{kind}.{key}=...)"
                    + (" or set it to null for no reservation" if name == "memory" else "")
                )


def ray_train_and_evaluate(
    cfg: ExperimentConfig, run_dir: str | Path, *, progress: bool = True
) -> tuple[pd.DataFrame, dict[str, str], int, dict[str, tuple[float, float]]]:
    """Train every model of `cfg`, then attack each, as Ray tasks (as `cfg.execution` says); wait for all.

    Returns:
        `(models, failed, n_computed, times)`: the training summary (SUMMARY_COLUMNS), the model
        ids whose task failed (after its retry) with why, the attack evaluations computed now, and
        each trained model's task `(start, end)` times (seconds since the epoch: the order it ran in).
    """
    ray = import_ray()
    started_here = _start_ray(ray, cfg.execution)
    try:
        check_feasible(ray, cfg.execution)
        return _submit_and_wait(ray, cfg, str(Path(run_dir).resolve()), progress)
    finally:
        if started_here:
            ray.shutdown()


def _submit_and_wait(
    ray: Any, cfg: ExperimentConfig, run_dir: str, progress: bool
) -> tuple[pd.DataFrame, dict[str, str], int, dict[str, tuple[float, float]]]:
    execution = cfg.execution
    threads = execution.worker_threads
    train_device = "cuda" if execution.train.gpus > 0 else "cpu"
    eval_device = "cuda" if execution.eval.gpus > 0 else "cpu"
    train_fn, eval_fn = ray.remote(_train_one), ray.remote(_evaluate_one)
    train_options, eval_options = task_options(execution.train), task_options(execution.eval)
    jobs = experiment_jobs(cfg)  # parents come before their children
    train_refs: dict[str, Any] = {}
    for job in jobs:
        parent_ref = train_refs.get(job.parent_id) if job.parent_id is not None else None
        # named after its model: the worker's process title is `ray::<name>` (ps, `ray list tasks`)
        train_refs[job.model_id] = train_fn.options(name=f"{TRAIN_TASK}:{job.model_id}", **train_options).remote(
            cfg, run_dir, job.model_id, train_device, threads, parent_ref
        )
    eval_refs = {
        job.model_id: eval_fn.options(name=f"{EVAL_TASK}:{job.model_id}", **eval_options).remote(
            cfg, run_dir, job.model_id, eval_device, threads, train_refs[job.model_id]
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
