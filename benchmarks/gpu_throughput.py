"""Benchmark: training images/s and attack examples/s, robustsparse next to a plain PyTorch loop.

Measured in one run, on the same model (ResNet-20, built by robustsparse), batch and precision:

- training, one epoch each (after a short warm-up):
  - `robustsparse_device_cache`: the trainer's loop (`train.loop.train_one_epoch`, bf16 autocast and
    channels-last on CUDA) over the device-resident decoded dataset (`data.device_cache`: crop and
    flip on the device), dense and with Campfire 70% (element, one shot: masks re-applied every step);
  - `robustsparse_dataloader`: the same loop over the torchvision DataLoader path (JPEG decoding
    and augmentation in `--workers` loader processes), dense;
  - `plain_pytorch`: a plain loop (forward, cross-entropy, backward, SGD step) on the same number
    of batches already on the device, not augmented: the pure-compute time of an epoch.
- attacks, PGD-10 (Linf, eps 8/255, alpha eps/4, random start) in float32 on `--attack-examples`
  test images with the dense model trained above: `attacks.evaluate` (efficient: clean-wrong
  examples skipped, early stop per example), its reference path (`efficient=False`: torchattacks,
  every example), and a plain PyTorch PGD loop.

Writes a JSON file (`--out`) and prints a Markdown table. On a GPU (see benchmarks/gpu_check.sh):
    python benchmarks/gpu_throughput.py --data data/cifar10-jpeg --device cuda --out runs/gpu-check/throughput.json
On the CPU, to check the script itself (the test suite runs this on a tiny folder):
    python benchmarks/gpu_throughput.py --data DIR --device cpu --tiny --out throughput.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

import attacks
from robustsparse.data import eval_subset, load_dataset, load_tensors, make_loaders
from robustsparse.data.device_cache import device_loaders
from robustsparse.models import create_model
from robustsparse.sparsity import SparsityConfig
from robustsparse.sparsity.methods import build_pruner
from robustsparse.train.loop import autocast_for, train_one_epoch

EPS = 8 / 255
PGD_STEPS = 10
# the sparse rows: Campfire at 70% (element), pruned once before the first step
CAMPFIRE_70 = SparsityConfig(
    method="campfire", granularity="element", target_sparsity=0.7, schedule="one_shot", end_epoch=0
)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(device: torch.device, work: Callable[[], object]) -> tuple[float, object]:
    _sync(device)
    tic = time.perf_counter()
    out = work()
    _sync(device)
    return time.perf_counter() - tic, out


def _model(info, device: torch.device, channels_last: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model(
        "resnet20",
        num_classes=info.num_classes,
        in_channels=info.in_channels,
        image_size=info.image_size,
        mean=info.mean,
        std=info.std,
    ).to(device)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def _trainer_epoch(model, loader: Iterable, steps: int, device, amp: bool, channels_last: bool, sparse: bool) -> dict:
    """The trainer's loop over `steps` batches of `loader`; images/s (warm-up excluded)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    pruner = build_pruner(model, CAMPFIRE_70, steps, 0) if sparse else None
    if pruner is not None:
        pruner.step(0, optimizer)

    def on_step_end(step: int) -> None:
        if pruner is not None:
            pruner.step(step, optimizer)
            pruner.apply_(optimizer)

    def run(batches: Iterable) -> dict:
        return train_one_epoch(
            model,
            batches,
            optimizer,
            None,
            device=device,
            amp=amp,
            channels_last=channels_last,
            on_step_end=on_step_end,
            progress=False,
        )

    seconds, stats = _timed(device, lambda: run(itertools.islice(iter(loader), steps)))
    return {"seconds": seconds, "steps": stats["steps"], "images": stats["n"], "images_per_s": stats["n"] / seconds}


def _plain_epoch(model, batches: list[tuple[torch.Tensor, torch.Tensor]], device, amp: bool) -> dict:
    """A plain PyTorch training loop over batches already on the device: the pure compute."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    model.train()

    def run() -> int:
        seen = 0
        for images, labels in batches:
            with autocast_for(device, amp):
                loss = F.cross_entropy(model(images).float(), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += len(labels)
        return seen

    seconds, seen = _timed(device, run)
    return {"seconds": seconds, "steps": len(batches), "images": seen, "images_per_s": seen / seconds}


def _plain_pgd(model, images: torch.Tensor, labels: torch.Tensor, batch_size: int, steps: int) -> int:
    """Plain PGD (Linf, random start, alpha eps/4) in float32; the number still correct."""
    model.eval()
    correct = 0
    alpha = EPS / 4
    generator = torch.Generator(device=images.device).manual_seed(0)
    for start in range(0, len(images), batch_size):
        x, y = images[start : start + batch_size], labels[start : start + batch_size]
        noise = torch.rand(x.shape, generator=generator, device=x.device) * 2 - 1
        adv = (x + EPS * noise).clamp(0, 1)
        for _ in range(steps):
            adv.requires_grad_(True)
            loss = F.cross_entropy(model(adv), y)
            (grad,) = torch.autograd.grad(loss, adv)
            adv = torch.min(torch.max(adv.detach() + alpha * grad.sign(), x - EPS), x + EPS).clamp(0, 1)
        with torch.no_grad():
            correct += int((model(adv).argmax(1) == y).sum())
    return correct


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="image folder with train/ and test/ (CIFAR-10 JPEG)")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=8, help="loader processes of the DataLoader path")
    parser.add_argument("--attack-examples", type=int, default=1000)
    parser.add_argument("--attack-batch-size", type=int, default=500)
    parser.add_argument("--no-amp", action="store_true", help="float32 training instead of bf16 autocast (CUDA)")
    parser.add_argument("--tiny", action="store_true", help="a few batches and examples: checks the script itself")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    amp = not args.no_amp and device.type == "cuda"
    channels_last = device.type == "cuda"
    batch = 8 if args.tiny else args.batch_size
    workers = 0 if args.tiny else args.workers
    n_attack = 16 if args.tiny else args.attack_examples
    pgd_steps = 2 if args.tiny else PGD_STEPS
    warmup = 1 if args.tiny else 20

    bundle = load_dataset("imagefolder", root=args.data, download=False, augment=True, split_seed=0, image_size=None)
    if args.tiny:
        bundle = replace(bundle, train=eval_subset(bundle.train, 4 * batch))
    cache_seconds, (cached_train, _) = _timed(
        device,
        lambda: device_loaders(
            bundle.train,
            bundle.test,
            image_size=bundle.info.image_size,
            augment=True,
            batch_size=batch,
            eval_batch_size=batch,
            device=device,
            seed=0,
            num_workers=workers,
        ),
    )
    steps = len(cached_train)
    results: dict = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
        "torch": torch.__version__,
        "model": "resnet20",
        "batch_size": batch,
        "precision": "bf16 autocast" if amp else "float32",
        "channels_last": channels_last,
        "train_images": len(bundle.train),
        "steps_per_epoch": steps,
        "device_cache_seconds": cache_seconds,
        "tiny": args.tiny,
        "training": {},
    }

    def warm(model) -> None:  # cuDNN autotuning and allocator warm-up, outside the timings
        _trainer_epoch(model, cached_train, warmup, device, amp, channels_last, sparse=False)

    dense = _model(bundle.info, device, channels_last)
    warm(dense)
    results["training"]["robustsparse_device_cache_dense"] = _trainer_epoch(
        dense, cached_train, steps, device, amp, channels_last, sparse=False
    )
    sparse = _model(bundle.info, device, channels_last)
    warm(sparse)
    results["training"]["robustsparse_device_cache_campfire70"] = _trainer_epoch(
        sparse, cached_train, steps, device, amp, channels_last, sparse=True
    )
    loader, _ = make_loaders(bundle, batch_size=batch, num_workers=workers, seed=0, pin_memory=device.type == "cuda")
    other = _model(bundle.info, device, channels_last)
    warm(other)
    results["training"]["robustsparse_dataloader_dense"] = _trainer_epoch(
        other, loader, steps, device, amp, channels_last, sparse=False
    )
    fixed = [(x.contiguous(memory_format=torch.channels_last) if channels_last else x, y) for x, y in cached_train]
    plain = _model(bundle.info, device, channels_last)
    _plain_epoch(plain, fixed[:warmup], device, amp)
    results["training"]["plain_pytorch_dense"] = _plain_epoch(plain, fixed, device, amp)
    pure = results["training"]["plain_pytorch_dense"]["seconds"]
    for row in results["training"].values():
        row["epoch_over_pure_compute"] = row["seconds"] / pure

    images, labels = load_tensors(bundle.test, n_attack)
    images, labels = images.to(device), labels.to(device)
    dense.eval()
    spec = f"pgd:eps=8/255,steps={pgd_steps}"
    attack_rows = {}
    for name, efficient in (("attacks_evaluate", True), ("attacks_evaluate_reference", False)):
        seconds, result = _timed(
            device,
            lambda efficient=efficient: attacks.evaluate(
                dense, images, labels, [spec], batch_size=args.attack_batch_size, seed=0, efficient=efficient
            ),
        )
        robust = float(result.to_frame().set_index("key").loc[result.specs[-1].key, "accuracy"])
        attack_rows[name] = {"seconds": seconds, "examples_per_s": len(images) / seconds, "robust_acc": robust}
    seconds, correct = _timed(device, lambda: _plain_pgd(dense, images, labels, args.attack_batch_size, pgd_steps))
    attack_rows["plain_pytorch_pgd"] = {
        "seconds": seconds,
        "examples_per_s": len(images) / seconds,
        "robust_acc": correct / len(images),
    }
    results["attack"] = {"spec": spec, "examples": len(images), "precision": "float32", **attack_rows}

    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
    print(f"| training ({results['precision']}, batch {batch}, {steps} steps) | images/s | epoch s | x pure compute |")
    print("| --- | ---: | ---: | ---: |")
    for name, row in results["training"].items():
        print(f"| {name} | {row['images_per_s']:.0f} | {row['seconds']:.2f} | {row['epoch_over_pure_compute']:.2f} |")
    print(f"\n| attack ({spec}, float32, {len(images)} examples) | examples/s | seconds | robust acc |")
    print("| --- | ---: | ---: | ---: |")
    for name, row in attack_rows.items():
        print(f"| {name} | {row['examples_per_s']:.0f} | {row['seconds']:.2f} | {row['robust_acc']:.3f} |")
    return results


if __name__ == "__main__":
    main()
