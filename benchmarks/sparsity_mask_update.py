"""Cost of one mask update (scores, allocation, masks, applying them) and of the per-step apply_.

Usage: .venv/bin/python benchmarks/sparsity_mask_update.py [--archs resnet20 resnet50] [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from sparsity_common import build, machine_line

from robustsparse.sparsity import GRANULARITIES, CampfirePruner, SparsityConfig


def measure(arch: str, granularity: str, repeats: int) -> dict:
    base = build(arch)
    update_s = []
    for _ in range(repeats):
        model = copy.deepcopy(base)
        cfg = SparsityConfig(
            method="campfire",
            granularity=granularity,
            target_sparsity=0.7,
            schedule="one_shot",
            start_epoch=0,
            end_epoch=1,
        )
        pruner = CampfirePruner(model, cfg, steps_per_epoch=1)
        tic = time.perf_counter()
        pruner.step(0)  # one full update: scores -> allocation -> masks -> applied
        update_s.append(time.perf_counter() - tic)
    # the per-step cost: apply_ with SGD momentum state present
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    apply_s = []
    for _ in range(20):
        tic = time.perf_counter()
        pruner.apply_(opt)
        apply_s.append(time.perf_counter() - tic)
    n = sum(p.numel() for p in model.parameters())
    return {
        "arch": arch,
        "granularity": granularity,
        "params": n,
        "update_s": statistics.median(update_s),
        "apply_ms": 1000 * statistics.median(apply_s),
        "achieved": pruner.achieved()["prunable"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["resnet20", "resnet50"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (1: steadier on a shared machine)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {machine_line()}")
    print("| model | params | granularity | mask update (s) | apply_ per step (ms) | achieved |")
    print("| --- | ---: | --- | ---: | ---: | ---: |")
    for arch in args.archs:
        for g in GRANULARITIES:
            r = measure(arch, g, args.repeats)
            print(
                f"| {arch} | {r['params'] / 1e6:.2f} M | {g} | {r['update_s']:.3f} | {r['apply_ms']:.2f} | {r['achieved']:.4f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
