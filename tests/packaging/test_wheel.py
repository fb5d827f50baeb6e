"""The wheel: built with `python -m build`, installed into a fresh virtual environment, it attacks a model.

The fresh environment reuses the test environment's packages (torch and the rest) through a
`.pth` line, not its robustsparse: the package itself comes from the wheel alone, so a module or
a data file missing from the wheel (the report templates) fails here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from email.parser import Parser
from pathlib import Path

import pandas as pd
import pytest
import torch

from robustsparse import __version__
from robustsparse.models import create_model

pytestmark = pytest.mark.wheel

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ("pyproject.toml", "README.md", "robustsparse", "attacks", "reports")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of the sources (the checkout gets no build/ or egg-info)."""
    src = tmp_path_factory.mktemp("src")
    for name in SHIPPED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(source, src / name)
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(src)],
        check=True,
        capture_output=True,
        text=True,
    )
    (built,) = out.glob("robustsparse-*.whl")
    return built


def test_the_wheel_names_its_version_dependencies_extras_and_templates(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(archive.read(metadata_name).decode())
    assert metadata["Version"] == __version__
    requires = metadata.get_all("Requires-Dist")
    assert any(r.startswith("torch") for r in requires) and any(r.startswith("torchattacks") for r in requires)
    assert {"test", "onnx", "parquet", "ray", "tensorboard"} <= set(metadata.get_all("Provides-Extra"))
    assert any(r.startswith("onnxruntime") and 'extra == "onnx"' in r for r in requires)
    assert any(n.startswith("reports/templates/") for n in names)  # package data, not only modules
    assert not any(n.startswith(("tests/", "configs/", "benchmarks/")) for n in names)


def test_the_installed_wheel_prints_its_version_and_attacks_a_model(wheel, tmp_path):
    env_dir = tmp_path / "env"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = Path(
        subprocess.run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    # reuse the installed dependencies (torch, ...) without their .pth files: not the editable robustsparse
    (site / "reuse_test_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # the fresh interpreter runs pip (reused too), so the console script is written for it; pip leaves
    # the test environment's own robustsparse alone (outside this environment)
    subprocess.run(
        [python, "-m", "pip", "install", "--no-deps", "--no-index", "--no-warn-script-location", str(wheel)],
        check=True,
        capture_output=True,
        text=True,
    )
    # a tiny digits model, saved as a plain state dict (a model from elsewhere, as a user would bring it)
    net = create_model("small_cnn", num_classes=10, in_channels=1, image_size=8, mean=(0,), std=(1,)).net
    torch.save(net.state_dict(), tmp_path / "tiny.pt")
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = dict(cwd=tmp_path, env=environment, capture_output=True, text=True)  # outside the checkout
    where = subprocess.run([python, "-c", "import robustsparse, reports; print(robustsparse.__file__)"], **run)
    assert where.returncode == 0 and str(site) in where.stdout, where.stderr  # the wheel's copy, not the checkout
    version = subprocess.run([env_dir / "bin" / "robustsparse", "--version"], **run)
    assert version.stdout.strip() == f"robustsparse {__version__}"
    attack = subprocess.run(
        [env_dir / "bin" / "robustsparse", "attack", "--weights", "tiny.pt", "--arch", "small_cnn"]
        + ["--dataset", "digits", "--mean", "0.3", "--std", "0.4", "--attack", "fgsm", "--eps", "8/255"]
        + ["--n-examples", "40", "--no-progress", "--no-sanity", "--out", "out"],
        **run,
    )
    assert attack.returncode == 0, attack.stderr
    results = pd.read_csv(tmp_path / "out" / "results.csv")
    assert set(results["attack"]) == {"clean", "fgsm"} and (results["n_examples"] == 40).all()
    meta = json.loads((tmp_path / "out" / "models" / "tiny" / "meta.json").read_text())
    assert meta["method"] == "external"
