"""benchmarks/gpu_throughput.py and gpu_check.sh stay runnable where no GPU is: the tiny CPU mode."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


def _image_folder(root: Path, classes: int = 3, per_class: int = 12, size: int = 16) -> Path:
    rng = np.random.default_rng(0)
    for split, count in (("train", per_class), ("test", per_class // 2)):
        for k in range(classes):
            for i in range(count):
                path = root / split / f"c{k}" / f"{i}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (size, size, 3)).astype(np.uint8), "RGB").save(path)
    return root


def test_the_throughput_script_runs_in_its_tiny_cpu_mode_and_writes_every_figure(tmp_path):
    data = _image_folder(tmp_path / "data")
    out = tmp_path / "throughput.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, str(ROOT / "benchmarks" / "gpu_throughput.py"), "--data", str(data)]
    done = subprocess.run(
        [*command, "--device", "cpu", "--tiny", "--out", str(out)], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["precision"] == "float32" and results["device"] == "cpu"  # autocast is CUDA-only
    assert set(results["training"]) == {
        "robustsparse_device_cache_dense",
        "robustsparse_device_cache_campfire70",
        "robustsparse_dataloader_dense",
        "plain_pytorch_dense",
    }
    for row in results["training"].values():
        assert row["images_per_s"] > 0 and row["images"] == 4 * results["batch_size"]  # the same work each
    assert results["training"]["plain_pytorch_dense"]["epoch_over_pure_compute"] == 1.0
    for name in ("attacks_evaluate", "attacks_evaluate_reference", "plain_pytorch_pgd"):
        row = results["attack"][name]
        assert row["examples_per_s"] > 0 and 0.0 <= row["robust_acc"] <= 1.0
    assert "| plain_pytorch_pgd |" in done.stdout  # the Markdown table


def test_the_gpu_check_script_is_valid_bash_and_names_its_steps():
    script = ROOT / "benchmarks" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    text = script.read_text()
    for step in ("-m gpu", "--nproc_per_node=1", "gpu_throughput.py", "data.device_cache=true", "campfire"):
        assert step in text, step


@pytest.mark.slow
def test_the_gpu_check_script_runs_every_step_in_its_cpu_tiny_mode(tmp_path):
    """All four steps end to end on the CPU (about 1.5 min on 2 busy cores: slow, run with -m slow)."""
    data = _image_folder(tmp_path / "data", size=32)
    out = tmp_path / "check"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "PYTHON": sys.executable}
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), str(data), str(out), "--cpu-tiny"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    summary = (out / "summary.md").read_text()
    for step in ("1-gpu-tests", "2-cifar10-run", "3-torchrun", "4-throughput"):
        assert f"| {step} |" in summary
    assert "| dense-s0 | 1 |" in summary and "campfire-element-70-s0" in summary
    assert (out / "torchrun" / "models" / "campfire-element-70-s0" / "model.pt").is_file()
