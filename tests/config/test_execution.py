"""The `execution` section: validated with one-line errors, overridden by the command line, and
never part of a model's digest or of the run folder's identity."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from robustsparse.cli import _with_execution_flags, build_parser, main
from robustsparse.config import ExecutionConfig, config_from_dict, dump_config, experiment_digest, load_config
from robustsparse.errors import ConfigError
from robustsparse.pipeline.run_dir import prepare_run_dir
from robustsparse.train.jobs import experiment_jobs

TINY = {
    "name": "ex",
    "data": {"dataset": "digits"},
    "train": {"epochs": 1},
    "sparsity": {
        "method": "campfire",
        "granularity": "element",
        "target_sparsity": 0.5,
        "schedule": "one_shot",
        "end_epoch": 0,
    },
}
RAY = {
    "executor": "ray",
    "ray_address": "auto",
    "ray_num_cpus": 4,
    "worker_threads": 2,
    "train": {"cpus": 2, "gpus": 1, "memory_gb": 16},
    "eval": {"cpus": 1, "gpus": 0.5, "memory_gb": None},
}


def test_defaults_run_locally_with_sensible_requests_per_job_kind():
    execution = config_from_dict({}).execution
    assert execution == ExecutionConfig()
    assert execution.executor == "local" and execution.ray_address is None and execution.worker_threads == 1
    assert (execution.train.cpus, execution.train.gpus, execution.train.memory_bytes) == (1.0, 0.0, 2_000_000_000)
    assert (execution.eval.cpus, execution.eval.gpus, execution.eval.memory_bytes) == (1.0, 0.0, 1_000_000_000)


@pytest.mark.parametrize(("key", "value"), [("cpus", 2), ("gpus", 1)])
def test_a_partial_job_kind_section_keeps_that_kinds_other_defaults(key, value):
    # setting one key of `eval` must not reset its memory to the training tasks' default
    cfg = load_config(Path("configs/digits-quick.yaml"), [f"execution.eval.{key}={value}"])
    assert getattr(cfg.execution.eval, key) == value and cfg.execution.eval.memory_gb == 1.0
    assert config_from_dict({"execution": {"eval": {key: value}}}).execution.eval.memory_gb == 1.0
    assert config_from_dict({"execution": {"train": {key: value}}}).execution.train.memory_gb == 2.0


def test_a_full_section_is_read_and_round_trips():
    cfg = config_from_dict({**TINY, "execution": RAY})
    assert cfg.execution.train.gpus == 1.0 and cfg.execution.train.memory_bytes == 16_000_000_000
    assert cfg.execution.eval.memory_bytes is None
    assert config_from_dict(yaml.safe_load(dump_config(cfg))) == cfg


@pytest.mark.parametrize(
    "execution, words",
    [
        ({"executor": "slurm"}, ["execution.executor", "'slurm'", "local, ray"]),
        ({"ray_num_cpus": 0}, ["execution.ray_num_cpus", "0", ">= 1"]),
        ({"worker_threads": 0}, ["execution.worker_threads", ">= 1"]),
        ({"ray_address": " "}, ["execution.ray_address", "HOST:PORT"]),
        ({"train": {"cpus": 0}}, ["execution.train.cpus", "> 0"]),
        ({"eval": {"gpus": -1}}, ["execution.eval.gpus", ">= 0"]),
        ({"train": {"memory_gb": 0}}, ["execution.train.memory_gb", "null for no reservation"]),
        ({"eval": {"memory": 3}}, ["execution.eval.memory", "allowed keys", "memory_gb"]),
        ({"train": {"gpus": "one"}}, ["execution.train.gpus", "'one'", "a number"]),
    ],
)
def test_bad_values_are_one_line_naming_the_key(execution, words):
    with pytest.raises(ConfigError) as err:
        config_from_dict({**TINY, "execution": execution})
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message


def test_execution_changes_no_model_digest_and_no_run_folder_identity(tmp_path):
    local, on_ray = config_from_dict(TINY), config_from_dict({**TINY, "execution": RAY})
    assert [job.digest for job in experiment_jobs(local)] == [job.digest for job in experiment_jobs(on_ray)]
    assert experiment_digest(local) == experiment_digest(on_ray)
    prepare_run_dir(local, tmp_path / "run")
    prepare_run_dir(on_ray, tmp_path / "run")  # the same experiment: resumed, not refused
    other = config_from_dict({**TINY, "train": {"epochs": 2}, "execution": RAY})
    assert experiment_digest(other) != experiment_digest(local)
    with pytest.raises(ConfigError, match="different configuration"):
        prepare_run_dir(other, tmp_path / "run")


def _run_args(config: Path, *flags: str) -> argparse.Namespace:
    return build_parser().parse_args(["run", str(config), *flags])


def test_command_line_flags_override_the_section_and_the_rest_is_kept(tmp_path):
    path = tmp_path / "ex.yaml"
    path.write_text(yaml.safe_dump({**TINY, "execution": RAY}))
    cfg = load_config(path)
    assert _with_execution_flags(cfg, _run_args(path)) is cfg  # no flag: the file's section as it is
    args = _run_args(path, "--executor", "local", "--train-memory-gb", "4", "--gpus-per-task", "0", "--eval-gpus", "2")
    execution = _with_execution_flags(cfg, args).execution
    assert execution.executor == "local" and execution.ray_address == "auto" and execution.worker_threads == 2
    assert execution.train == replace(cfg.execution.train, memory_gb=4.0, gpus=0.0)  # its cpus kept
    assert execution.eval.gpus == 2.0  # a kind's own flag wins over --gpus-per-task
    args = _run_args(path, "--ray-address", "10.0.0.1:6379", "--ray-num-cpus", "8", "--worker-threads", "3")
    execution = _with_execution_flags(cfg, args).execution
    assert (execution.ray_address, execution.ray_num_cpus, execution.worker_threads) == ("10.0.0.1:6379", 8, 3)


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--train-cpus", "0"], ["--train-cpus", "number > 0"]),
        (["--eval-memory-gb", "lots"], ["--eval-memory-gb", "'lots' is not a number"]),
        (["--gpus-per-task", "-1"], ["--gpus-per-task", ">= 0"]),
        (["--executor", "dask"], ["--executor", "dask"]),
    ],
)
def test_bad_flags_are_one_line_exit_2_and_write_nothing(tmp_path, capsys, flags, words):
    path = tmp_path / "ex.yaml"
    path.write_text(yaml.safe_dump(TINY))
    code = main(["run", str(path), "--out", str(tmp_path / "run"), "--no-progress", *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    for word in words:
        assert word in err[0], err[0]
    assert not (tmp_path / "run").exists()


def test_a_bad_section_in_the_file_is_one_line_exit_2(tmp_path, capsys):
    path = tmp_path / "ex.yaml"
    path.write_text(yaml.safe_dump({**TINY, "execution": {"train": {"memory_gb": -2}}}))
    code = main(["run", str(path), "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "execution.train.memory_gb = -2" in err[0], err
    assert not (tmp_path / "run").exists()


def test_local_results_do_not_depend_on_the_execution_section(tmp_path):
    """A local run with an execution section (resources only matter on Ray) gives the same rows."""
    from robustsparse.pipeline import run_experiment

    small = {**TINY, "attack": {"n_examples": 40, "sanity_checks": False, "specs": [{"name": "fgsm", "eps": [0.1]}]}}
    plain = run_experiment(
        config_from_dict(small), tmp_path / "a", device=torch.device("cpu"), progress=False, report=False
    )
    with_section = {**small, "execution": {**RAY, "executor": "local"}}
    other = run_experiment(
        config_from_dict(with_section), tmp_path / "b", device=torch.device("cpu"), progress=False, report=False
    )
    columns = ["model_id", "key", "n_correct"]
    assert plain.results[columns].equals(other.results[columns])
