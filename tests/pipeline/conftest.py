"""The tiny experiment (see tests/conftest.py) as a YAML file, for pipeline tests that start from a file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml


@pytest.fixture
def tiny_config_file(tmp_path: Path, tiny_run_settings) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_run_settings, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def tiny_grid() -> dict:
    """A tiny digits grid (dense, its control, two sparse children) for the executor and claims tests."""
    return {
        "name": "ray",
        "data": {"dataset": "digits"},
        "model": {"arch": "small_cnn"},
        "train": {"epochs": 1, "batch_size": 128},
        "sparsity": {
            "method": "campfire",
            "granularity": ["element", "kernel"],
            "target_sparsity": 0.5,
            "schedule": "one_shot",
            "end_epoch": 0,
        },
        "attack": {"n_examples": 60, "sanity_checks": False, "specs": [{"name": "fgsm", "eps": ["8/255"]}]},
    }
