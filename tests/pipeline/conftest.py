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
