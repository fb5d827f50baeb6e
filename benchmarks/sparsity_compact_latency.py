"""CPU latency of compacted filter-pruned models against the dense model, next to the MACs ratio.

The filter-pruned model is compacted (`compact_model`: removed channels physically cut out)
and timed in eval mode under `torch.inference_mode`, interleaved with the dense model so load
from other processes hits both alike; the median of `--repeats` calls is reported.

Usage: .venv/bin/python benchmarks/sparsity_compact_latency.py [--threads 1] [--repeats 15]
"""

from __future__ import annotations

import argparse
import copy

import torch
from sparsity_common import IMAGE_SIZE, build, machine_line, time_interleaved

from robustsparse.sparsity import compact_model, model_cost, prune_one_shot

CASES = [("resnet20", 1), ("resnet20", 64), ("vgg16_bn", 1), ("vgg16_bn", 64), ("resnet50", 1)]


def measure(arch: str, batch: int, target: float, repeats: int) -> dict:
    dense = build(arch).eval()
    pruned = copy.deepcopy(dense)
    pruner = prune_one_shot(pruned, "filter", target)
    small = compact_model(pruned, pruner.masks).eval()
    size = IMAGE_SIZE[arch]
    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        err = float((small(x) - pruned.eval()(x)).abs().max())

        def run(model):
            return lambda: model(x)

        times = time_interleaved({"dense": run(dense), "compact": run(small)}, repeats)
    cost_dense = model_cost(dense, x[:1])
    cost_small = model_cost(small, x[:1])
    return {
        "arch": arch,
        "batch": batch,
        "target": target,
        "achieved": pruner.achieved()["prunable"],
        "dense_ms": 1000 * times["dense"],
        "compact_ms": 1000 * times["compact"],
        "speedup": times["dense"] / times["compact"],
        "macs_ratio": cost_dense["dense_macs"] / cost_small["dense_macs"],
        "params_ratio": cost_dense["params"] / cost_small["params"],
        "max_abs_diff": err,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--targets", type=float, nargs="+", default=[0.5, 0.7])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {machine_line()}")
    print(
        "| model | batch | target | achieved | dense ms | compact ms | measured speed-up | MACs ratio | params ratio | max |diff| |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for arch, batch in CASES:
        for target in args.targets:
            r = measure(arch, batch, target, args.repeats)
            print(
                f"| {arch} | {batch} | {target:g} | {r['achieved']:.3f} | {r['dense_ms']:.1f} | {r['compact_ms']:.1f} | "
                f"{r['speedup']:.2f}x | {r['macs_ratio']:.2f}x | {r['params_ratio']:.2f}x | {r['max_abs_diff']:.1e} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
