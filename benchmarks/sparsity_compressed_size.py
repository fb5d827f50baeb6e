"""Compressed export size against the dense state dict, for every granularity at 70% target.

Sizes are payload bytes (values + index + header) from `compressed_size_bytes`, and the size
of the file `torch.save` writes for the blob and for the dense state dict (zip container
overhead included). Weights are random: sizes do not depend on the values.

Usage: .venv/bin/python benchmarks/sparsity_compressed_size.py [--archs resnet20 resnet50] [--target 0.7]
"""

from __future__ import annotations

import argparse
import io
import json
from collections import Counter

import torch
from sparsity_common import build, machine_line

from robustsparse.sparsity import (
    GRANULARITIES,
    compressed_size_bytes,
    dense_size_bytes,
    export_compressed,
    load_compressed,
    prune_one_shot,
)


def file_bytes(obj: object) -> int:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.tell()


def measure(arch: str, granularity: str, target: float) -> dict:
    model = build(arch)
    pruner = prune_one_shot(model, granularity, target)
    state = model.state_dict()
    blob = export_compressed(state, pruner.masks, pruner.granularity_info())
    back = load_compressed(blob)
    identical = all(torch.equal(back[k], v) for k, v in state.items())
    entries = json.loads(bytes(blob["__header__"].tolist()).decode())["entries"]
    encodings = Counter(e["encoding"] for e in entries.values() if e["encoding"] != "raw")
    values = sum(v.numel() * v.element_size() for k, v in blob.items() if k.endswith("::values"))
    total = compressed_size_bytes(blob)
    dense = dense_size_bytes(state)
    return {
        "arch": arch,
        "granularity": granularity,
        "achieved": pruner.achieved()["prunable"],
        "achieved_all": pruner.achieved()["all"],
        "dense": dense,
        "compressed": total,
        "index": total - values,
        "ratio": dense / total,
        "file_dense": file_bytes(state),
        "file_compressed": file_bytes(blob),
        "identical": identical,
        "encodings": ", ".join(f"{k} x{n}" for k, n in encodings.most_common()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["resnet20", "resnet50"])
    parser.add_argument("--target", type=float, default=0.7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {machine_line()}")
    print(
        "| model | granularity | sparsity (prunable / all) | dense MB | compressed MB | of which index MB | dense / compressed | "
        "file MB dense -> compressed | bit-identical | index encodings |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |")
    for arch in args.archs:
        for g in GRANULARITIES:
            r = measure(arch, g, args.target)
            mb = 1e6
            print(
                f"| {arch} | {g} | {r['achieved']:.3f} / {r['achieved_all']:.3f} | {r['dense'] / mb:.3f} | "
                f"{r['compressed'] / mb:.3f} | {r['index'] / mb:.3f} | {r['ratio']:.2f}x | "
                f"{r['file_dense'] / mb:.3f} -> {r['file_compressed'] / mb:.3f} | {r['identical']} | {r['encodings']} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
