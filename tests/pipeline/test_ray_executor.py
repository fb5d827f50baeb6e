"""The Ray executor: same results as the local executor, parents before children, a failed task reported, no Ray: one line."""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from reports.contract import META_FILE, MODELS_DIR, RESUME_STATE_FILE
from robustsparse.cli import main
from robustsparse.config import ExperimentConfig, load_config
from robustsparse.errors import ConfigError
from robustsparse.pipeline import ray_executor
from robustsparse.pipeline.experiment import run_experiment
from robustsparse.pipeline.ray_executor import TRAIN_TASK, check_feasible, ray_train_and_evaluate, task_options
from robustsparse.pipeline.run_dir import prepare_run_dir
from robustsparse.train.jobs import experiment_jobs

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def ray_session():
    """One embedded two-worker Ray for every test here, shut down after them (nothing leaks)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def cfg(tmp_path_factory, tiny_grid):
    # two epochs: after the first, last.pt marks a model in the middle of its training
    path = tmp_path_factory.mktemp("cfg") / "ray.yaml"
    path.write_text(yaml.safe_dump({**tiny_grid, "train": {**tiny_grid["train"], "epochs": 2}}))
    return load_config(path)


@pytest.fixture(scope="module")
def local_rows(cfg, tmp_path_factory):
    """The local executor's rows of the grid, run once, uninterrupted: what every Ray run must give."""
    local = run_experiment(cfg, tmp_path_factory.mktemp("local"), device=CPU, progress=False, report=False)
    assert len(local.results) == len(experiment_jobs(cfg)) * len(cfg.attack.attack_specs())
    return _rows(local.results)


def on_ray(cfg: ExperimentConfig, **execution) -> ExperimentConfig:
    """`cfg` run by the Ray executor (with these execution settings)."""
    return replace(cfg, execution=replace(cfg.execution, executor="ray", **execution))


def _rows(results):
    return results[["model_id", "key", "n_correct"]].sort_values(["model_id", "key"]).reset_index(drop=True)


def test_ray_runs_parents_first_and_gives_the_local_results(ray_session, cfg, local_rows, tmp_path):
    run_dir = prepare_run_dir(cfg, tmp_path / "ray")
    models, failed, computed, times = ray_train_and_evaluate(on_ray(cfg), run_dir, progress=False)
    jobs = experiment_jobs(cfg)
    assert failed == {} and computed == len(jobs) * len(cfg.attack.attack_specs())  # each computed once
    assert set(models["status"]) == {"trained"}
    children = [job for job in jobs if job.parent_id is not None]
    assert children  # the grid has parent -> child dependencies to respect
    for job in children:
        assert times[job.model_id][0] >= times[job.parent_id][1], job.model_id
    assert ray_session.is_initialized()  # a Ray it did not start is left running

    # the driver assembles from the workers' caches: nothing more to compute, the local executor's rows
    ray_run = run_experiment(on_ray(cfg), run_dir, device=CPU, progress=False, report=False)
    assert ray_run.n_evaluated == 0 and set(ray_run.models["status"]) == {"found"}
    assert _rows(ray_run.results).equals(local_rows)


def test_a_task_that_keeps_failing_is_reported_and_the_rest_finishes(ray_session, cfg, tmp_path):
    run_dir = prepare_run_dir(cfg, tmp_path / "ray")
    broken = next(job for job in experiment_jobs(cfg) if job.sparsity is not None)
    # a resume state of another setting: its training raises CheckpointError, on the retry too
    (run_dir / MODELS_DIR / broken.model_id).mkdir(parents=True)
    torch.save({"format": "not-ours"}, run_dir / MODELS_DIR / broken.model_id / RESUME_STATE_FILE)
    summary = run_experiment(on_ray(cfg), run_dir, device=CPU, progress=False, report=False)
    failed = summary.failed()
    assert list(failed["model_id"]) == [broken.model_id]
    assert "train task failed" in failed["failure"].iloc[0] and "training state" in failed["failure"].iloc[0]
    others = {job.model_id for job in experiment_jobs(cfg)} - {broken.model_id}
    assert set(summary.results["model_id"]) == others


def test_executor_ray_without_ray_installed_is_one_line(tmp_path, capsys, monkeypatch, tiny_grid):
    config = tmp_path / "ray.yaml"
    config.write_text(yaml.safe_dump(tiny_grid))
    monkeypatch.setattr(ray_executor, "RAY_MODULE", "ray_not_installed_here")
    code = main(["run", str(config), "--out", str(tmp_path / "run"), "--executor", "ray", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "robustsparse[ray]" in err[0]
    assert not Path(tmp_path / "run").exists()  # refused before anything is written


def test_a_request_no_node_can_meet_is_one_line_not_a_hang(ray_session, cfg):
    total = ray_session.cluster_resources()["memory"] / 1e9
    check_feasible(ray_session, cfg.execution)  # the defaults (2 GB, 1 GB, 1 CPU) fit this machine
    too_much = replace(cfg.execution.eval, memory_gb=round(total * 10, 1))
    with pytest.raises(ConfigError, match=r"^execution\.eval\.memory_gb = .* is more than any Ray node has"):
        check_feasible(ray_session, replace(cfg.execution, eval=too_much))
    with pytest.raises(ConfigError, match=r"^execution\.train\.gpus = 1 is more than any Ray node has \(0 on"):
        check_feasible(ray_session, replace(cfg.execution, train=replace(cfg.execution.train, gpus=1.0)))


def _assigned() -> dict:
    import ray

    return ray.get_runtime_context().get_assigned_resources()


def test_each_task_kind_holds_its_configured_cpus_and_memory(ray_session, cfg):
    execution = replace(
        on_ray(cfg).execution,
        train=replace(cfg.execution.train, cpus=0.5, memory_gb=1.5),
        eval=replace(cfg.execution.eval, memory_gb=None),
    )
    probe = ray_session.remote(_assigned)
    train = ray_session.get(probe.options(**task_options(execution.train)).remote())
    evaluation = ray_session.get(probe.options(**task_options(execution.eval)).remote())
    assert train == {"CPU": 0.5, "memory": 1.5e9}
    assert evaluation == {"CPU": 1.0}  # memory_gb: null reserves none
    assert task_options(execution.train)["max_retries"] == 1  # a dead worker's task is retried once


def _pids_titled(title: str) -> list[int]:
    """The processes whose title is `title` (a Ray worker running task `name` is titled `ray::name`)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            words = Path("/proc", entry, "cmdline").read_bytes().replace(b"\0", b" ").split()
        except OSError:
            continue
        if words and words[0] == title.encode():
            pids.append(int(entry))
    return pids


class WorkerKiller(threading.Thread):
    """kill -9 the Ray worker running a model's training task, `times` times (each attempt once),
    once `ready(model_id)` says so (e.g. when the model is in the middle of its training)."""

    def __init__(self, plan: dict[str, int], ready) -> None:
        super().__init__(daemon=True)
        self.plan, self.ready = plan, ready
        self.killed: dict[str, list[int]] = {model_id: [] for model_id in plan}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            for model_id, times in self.plan.items():
                if len(self.killed[model_id]) >= times or not self.ready(model_id):
                    continue
                for pid in _pids_titled(f"ray::{TRAIN_TASK}:{model_id}"):
                    if pid not in self.killed[model_id] and len(self.killed[model_id]) < times:
                        os.kill(pid, signal.SIGKILL)
                        self.killed[model_id].append(pid)
            time.sleep(0.01)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the Ray workers by their process titles in /proc (Linux)")
def test_kill_9_of_workers_mid_grid_retries_once_fails_the_twice_killed_job_and_a_rerun_gives_the_local_results(
    ray_session, cfg, local_rows, tmp_path
):
    """A worker killed in the middle of training is retried (and resumes from `last.pt`); a job whose
    worker is killed twice is reported failed while the rest of the grid finishes; a rerun then
    completes, and every row equals an uninterrupted local run's."""
    jobs = experiment_jobs(cfg)
    dense = jobs[0].model_id
    twice = next(job.model_id for job in jobs if job.sparsity is not None)
    run_dir = prepare_run_dir(cfg, tmp_path / "ray")
    models_root = run_dir / MODELS_DIR

    def ready(model_id: str) -> bool:  # the dense model: killed after its first epoch, before its last
        return model_id != dense or (models_root / dense / RESUME_STATE_FILE).is_file()

    killer = WorkerKiller({dense: 1, twice: 2}, ready)
    killer.start()
    try:
        first = run_experiment(on_ray(cfg), run_dir, device=CPU, progress=False, report=False)
    finally:
        killer.done.set()
        killer.join()
    assert [len(killer.killed[dense]), len(killer.killed[twice])] == [1, 2]
    failed = first.failed()
    assert list(failed["model_id"]) == [twice], failed  # the dense model's retry succeeded
    assert failed["failure"].iloc[0].startswith("train task failed")
    assert not (models_root / twice / META_FILE).exists()  # not marked failed on disk: a rerun retries it
    assert set(first.results["model_id"]) == {job.model_id for job in jobs} - {twice}  # the rest finished

    again = run_experiment(on_ray(cfg), run_dir, device=CPU, progress=False, report=False)
    assert again.failed().empty
    assert dict(zip(again.models["model_id"], again.models["status"]))[twice] == "trained"
    assert _rows(again.results).equals(local_rows)
