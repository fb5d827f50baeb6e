"""Time of one training step with masks against the same step dense (goal: at most 1.10x).

A plain SGD loop (momentum 0.9, Nesterov, weight decay): forward, cross-entropy, backward,
optimizer step; the masked variant adds what the trainer calls after every step,
`pruner.step(global_step)` (no update is due: masks are frozen) and `pruner.apply_(optimizer)`.
Dense and masked steps alternate so that load from other processes hits both alike; the
median of `--repeats` steps is reported. The masked model does the same dense arithmetic (no
sparse kernels), so the ratio measures the engine's overhead.

Usage: .venv/bin/python benchmarks/sparsity_train_step.py [--threads 1] [--repeats 20]
"""

from __future__ import annotations

import argparse
import copy
import itertools

import torch
import torch.nn.functional as F
from sparsity_common import IMAGE_SIZE, build, machine_line, time_interleaved

from robustsparse.sparsity import prune_one_shot

CASES = [("small_cnn", 64), ("resnet20", 128)]
GRANULARITIES = ["element", "window", "filter"]


def make_step(model, optimizer, x, y, pruner=None):
    counter = itertools.count(1)

    def step():
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
        if pruner is not None:
            pruner.step(next(counter))
            pruner.apply_(optimizer)

    return step


def measure(arch: str, batch: int, granularity: str, repeats: int) -> dict:
    dense = build(arch).train()
    masked = copy.deepcopy(dense)
    pruner = prune_one_shot(masked, granularity, 0.7)
    channels = 1 if arch == "small_cnn" else 3
    size = IMAGE_SIZE[arch]
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, channels, size, size, generator=g)
    y = torch.randint(0, 10, (batch,), generator=g)

    def sgd(model):
        return torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)

    times = time_interleaved(
        {"dense": make_step(dense, sgd(dense), x, y), "masked": make_step(masked, sgd(masked), x, y, pruner)},
        repeats,
        warmup=3,
    )
    return {
        "dense_ms": 1000 * times["dense"],
        "masked_ms": 1000 * times["masked"],
        "ratio": times["masked"] / times["dense"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {machine_line()}")
    print("| model | batch | granularity (70%) | dense step ms | masked step ms | masked / dense |")
    print("| --- | ---: | --- | ---: | ---: | ---: |")
    for (arch, batch), granularity in itertools.product(CASES, GRANULARITIES):
        r = measure(arch, batch, granularity, args.repeats)
        print(
            f"| {arch} | {batch} | {granularity} | {r['dense_ms']:.1f} | {r['masked_ms']:.1f} | {r['ratio']:.3f}x |",
            flush=True,
        )


if __name__ == "__main__":
    main()
