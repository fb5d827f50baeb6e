"""CPU latency of haloc's compact low-rank models against the dense model, next to the MACs ratio.

Two sources of models:
- synthetic (default): an architecture with random weights whose compressible convs are
  factorised (HOSVD, `factorise_model`) at, per layer, the largest rank candidate (multiples of
  `--g`) whose Tucker-2 MACs stay within `--targets` of the conv's MACs;
- trained (`--models DIR ...`): haloc model folders, each timed against its dense parent (the
  folder named by its metadata's `parent`, beside it).

Eval mode, `torch.inference_mode`, the two models interleaved so load from other processes hits
both alike; the median of `--repeats` calls at batch 1 and 64.

Usage: .venv/bin/python benchmarks/haloc_latency.py [--threads 1] [--repeats 15] [--models runs/x/models/haloc-...]
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import torch
from sparsity_common import IMAGE_SIZE, build, machine_line, time_interleaved

from robustsparse.checkpoints import load_checkpoint
from robustsparse.sparsity import model_cost
from robustsparse.sparsity.lowrank import (
    compressible_convs,
    conv_geometry,
    conv_macs,
    factorise_model,
    rank_candidates,
    tucker_macs,
)

ARCHS = ["resnet20", "small_cnn"]
BATCHES = [1, 64]


def ranks_within(model: torch.nn.Module, example: torch.Tensor, share: float, g: int) -> dict[str, tuple[int, int]]:
    """Per compressible conv, the largest candidate whose Tucker-2 MACs are within `share` of the conv's."""
    names = compressible_convs(model)
    geometry = conv_geometry(model, example, names)
    out = {}
    for name, geo in geometry.items():
        candidates = rank_candidates(geo.in_channels, geo.out_channels, g)
        fits = [r for r in candidates if tucker_macs(geo, r, r) <= share * conv_macs(geo)]
        r = max(fits) if fits else candidates[0]
        out[name] = (r, r)
    return out


def timed(dense: torch.nn.Module, small: torch.nn.Module, channels: int, size: int, repeats: int) -> list[dict]:
    rows = []
    dense_cost = model_cost(dense, (1, channels, size, size))
    small_cost = model_cost(small, (1, channels, size, size))
    for batch in BATCHES:
        x = torch.rand(batch, channels, size, size, generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            times = time_interleaved({"dense": lambda x=x: dense(x), "compact": lambda x=x: small(x)}, repeats)
        rows.append(
            {
                "batch": batch,
                "dense_ms": 1000 * times["dense"],
                "compact_ms": 1000 * times["compact"],
                "speedup": times["dense"] / times["compact"],
                "macs_ratio": dense_cost["dense_macs"] / small_cost["dense_macs"],
                "params_ratio": dense_cost["params"] / small_cost["params"],
            }
        )
    return rows


def synthetic(arch: str, share: float, g: int, repeats: int) -> list[dict]:
    dense = build(arch).eval()
    size = IMAGE_SIZE[arch]
    channels = 1 if arch == "small_cnn" else 3
    example = torch.zeros(1, channels, size, size)
    small = factorise_model(copy.deepcopy(dense), ranks_within(dense, example, share, g)).eval()
    return [
        {"model": f"{arch} ({size}x{size}) random", "target": share, **r}
        for r in timed(dense, small, channels, size, repeats)
    ]


def trained(folder: Path, repeats: int) -> list[dict]:
    small, meta = load_checkpoint(folder)
    dense, _ = load_checkpoint(folder.parent / meta["parent"])
    info = meta["data"]["info"]
    target = meta["sparsity"]["lowrank"]["cost"]["target_fraction"]
    rows = timed(dense, small, int(info["in_channels"]), int(info["image_size"]), repeats)
    return [{"model": meta["model_id"], "target": target, **r} for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--targets", type=float, nargs="+", default=[0.5, 0.28])
    parser.add_argument("--g", type=int, default=8, help="rank multiple of the synthetic cases")
    parser.add_argument("--models", type=Path, nargs="*", default=[], help="trained haloc model folders")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {machine_line()}")
    print("| model | target | batch | dense ms | compact ms | measured speed-up | MACs ratio | params ratio |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    rows = [r for folder in args.models for r in trained(folder, args.repeats)]
    if not args.models:
        rows = [r for arch in ARCHS for share in args.targets for r in synthetic(arch, share, args.g, args.repeats)]
    for r in rows:
        print(
            f"| {r['model']} | {r['target']:g} | {r['batch']} | {r['dense_ms']:.2f} | {r['compact_ms']:.2f} | "
            f"{r['speedup']:.2f}x | {r['macs_ratio']:.2f}x | {r['params_ratio']:.2f}x |",
            flush=True,
        )


if __name__ == "__main__":
    main()
