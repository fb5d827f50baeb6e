"""Claims: two processes on one run folder train and attack each model once; a dead claim is taken over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from robustsparse.pipeline.claims import Claimed, claim


def _env() -> dict[str, str]:
    # one thread each: two processes share the machine's cores without oversubscribing them
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}


def _start_run(config: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "robustsparse", "run", str(config), "--out", str(out), "--no-progress", "--no-report"],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_processes_on_one_folder_train_each_model_once_and_agree_with_one_process(tmp_path, tiny_grid):
    config = tmp_path / "claims.yaml"
    config.write_text(yaml.safe_dump({**tiny_grid, "name": "claims"}))
    both = [_start_run(config, tmp_path / "shared"), _start_run(config, tmp_path / "shared")]
    logs = [p.communicate(timeout=600) for p in both]
    assert all(p.returncode == 0 for p in both), [err[-2000:] for _, err in logs]
    trained = [line for _, err in logs for line in err.splitlines() if ": finished, test accuracy" in line]
    model_ids = [line.split(": finished")[0].rsplit(" ", 1)[-1] for line in trained]
    assert sorted(model_ids) == sorted(set(model_ids)) and len(model_ids) == 4  # dense, control, 2 sparse: once each
    evaluated = [line for _, err in logs for line in err.splitlines() if "attack specs evaluated" in line]
    assert len(evaluated) == 4  # and each model attacked once

    alone = _start_run(config, tmp_path / "alone")
    _, err = alone.communicate(timeout=600)
    assert alone.returncode == 0, err[-2000:]
    columns = ["model_id", "key", "n_correct"]
    shared = pd.read_csv(tmp_path / "shared" / "results.csv")[columns].sort_values(columns[:2], ignore_index=True)
    single = pd.read_csv(tmp_path / "alone" / "results.csv")[columns].sort_values(columns[:2], ignore_index=True)
    pd.testing.assert_frame_equal(shared, single)


def test_a_claim_held_elsewhere_is_refused_and_taken_over_once_its_process_is_killed(tmp_path):
    folder = tmp_path / "models" / "m"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from robustsparse.pipeline.claims import claim\n"
            f"with claim({str(folder)!r}):\n"
            "    print('held', flush=True)\n"
            "    time.sleep(600)\n",
        ],
        env=_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(Claimed), claim(folder):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    with claim(folder):  # the dead process's lock is free again: taken over, no waiting
        pass
