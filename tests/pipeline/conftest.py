"""A tiny experiment (digits, 2 sparse settings, a short attack sweep) shared by the pipeline tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

TINY = {
    "name": "tiny",
    "seeds": [0],
    "data": {"dataset": "digits"},
    "model": {"arch": "small_cnn"},
    "train": {"epochs": 3, "batch_size": 128, "lr": 0.05},
    "sparsity": {"method": "campfire", "granularity": ["element", "filter"], "target_sparsity": 0.5,
                 "start_epoch": 0, "end_epoch": 2},
    "attack": {"n_examples": 120, "batch_size": 128,
               "specs": [{"name": "fgsm", "eps": ["4/255", "16/255"]}, {"name": "pgd", "eps": ["16/255"], "steps": 3}]},
}


@pytest.fixture
def tiny_config_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY, sort_keys=False))
    return path
