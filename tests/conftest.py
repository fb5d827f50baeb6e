"""Fixtures shared across test folders: a finished tiny run (digits, dense + two sparse models)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

TINY_RUN = {
    "name": "tiny",
    "seeds": [0],
    "data": {"dataset": "digits"},
    "model": {"arch": "small_cnn"},
    "train": {"epochs": 2, "batch_size": 128, "lr": 0.05},
    "sparsity": {
        "method": "campfire",
        "granularity": ["element", "filter"],
        "target_sparsity": 0.5,
        "start_epoch": 0,
        "end_epoch": 1,
    },
    "attack": {
        "n_examples": 80,
        "batch_size": 128,
        "specs": [{"name": "fgsm", "eps": ["4/255", "16/255"]}, {"name": "pgd", "eps": ["16/255"], "steps": 3}],
    },
}


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A finished run folder of the tiny experiment (models, results, outcomes, sanity, report).

    Session-scoped: build it once; tests must not modify it (copy it first).
    """
    from robustsparse.config import config_from_dict
    from robustsparse.pipeline import run_experiment

    run_dir = tmp_path_factory.mktemp("tiny-run") / "run"
    run_experiment(config_from_dict(TINY_RUN), run_dir, device=torch.device("cpu"), progress=False)
    return run_dir


@pytest.fixture
def tiny_run_settings() -> dict:
    """The tiny experiment's settings as a plain mapping (a fresh copy per test)."""
    import copy

    return copy.deepcopy(TINY_RUN)
