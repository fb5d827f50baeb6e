"""Shared helpers for the sparsity benchmarks: model building, one-shot pruning, robust timing."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from robustsparse.models import create_model

__all__ = ["build", "time_interleaved", "machine_line", "IMAGE_SIZE"]

IMAGE_SIZE = {"resnet20": 32, "resnet18_cifar": 32, "vgg16_bn": 32, "resnet50": 224, "small_cnn": 8}


def build(arch: str, seed: int = 0) -> nn.Module:
    """A registry model with random weights and non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    channels = 1 if arch == "small_cnn" else 3
    model = create_model(
        arch,
        num_classes=1000 if arch == "resnet50" else 10,
        in_channels=channels,
        image_size=IMAGE_SIZE[arch],
        mean=(0.5,) * channels,
        std=(0.25,) * channels,
    )
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
    return model


def time_interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 2) -> dict[str, float]:
    """Median seconds per call of each function, the functions called in turn (ABAB...) so that
    load from other processes on a shared machine hits all of them alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            tic = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - tic)
    return {k: statistics.median(v) for k, v in samples.items()}


def machine_line() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, load average {load:.1f} at start"
    )
