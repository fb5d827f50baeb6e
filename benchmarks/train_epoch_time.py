"""Time one training epoch of ResNet-20 on CIFAR-10 (JPEG ImageFolder copy) on this machine.

Runs the real command line (`robustsparse train` with `dataset: imagefolder`) for one epoch of
the dense model and reads the epoch time from its `train_log.csv`.

Usage (after `make venv` and unpacking the data, see README):
    .venv/bin/python benchmarks/train_epoch_time.py --root data/cifar10-jpeg [--device cpu] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from reports.contract import MODELS_DIR, TRAIN_LOG_FILE


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="data/cifar10-jpeg", help="folder with train/ and test/")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    config = Path(__file__).resolve().parents[1] / "configs" / "cifar10-resnet20.yaml"
    with tempfile.TemporaryDirectory() as out:
        command = [
            sys.executable,
            "-m",
            "robustsparse",
            "train",
            str(config),
            "--out",
            out,
            "--no-progress",
            "--device",
            args.device,
            "--set",
            "data.dataset=imagefolder",
            "--set",
            f"data.root={args.root}",
            "--set",
            f"data.num_workers={args.workers}",
            "--set",
            "train.epochs=1",
            "--set",
            f"train.batch_size={args.batch_size}",
            "--set",
            "sparsity.method=none",
            "--set",
            "sparsity.granularity=element",
            "--set",
            "sparsity.target_sparsity=0.0",
        ]
        tic = time.perf_counter()
        subprocess.run(command, check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        wall = time.perf_counter() - tic
        log = pd.read_csv(Path(out) / MODELS_DIR / "dense-s0" / TRAIN_LOG_FILE)
    epoch = float(log["epoch_seconds"].iloc[0])
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    print(
        f"resnet20 / CIFAR-10 (JPEG) / batch {args.batch_size} / {args.workers} workers / {args.device}: "
        f"epoch {epoch:.1f} s (train + test pass), whole command {wall:.1f} s, "
        f"test accuracy after 1 epoch {log['test_acc'].iloc[0]:.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
