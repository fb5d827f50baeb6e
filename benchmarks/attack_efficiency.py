"""Benchmark: the attacks package's efficient engines against a plain torchattacks loop.

Same grid both ways, FGSM at 8 eps values and PGD-10 (alpha = eps/4, random start) at 4 eps
values, on 1,000 examples the model was not trained on, either

- by default: scikit-learn digits and the project's small CNN trained inside the script on the
  other 797 digits (seconds); or
- with ``--checkpoint PATH``: a checkpoint written by ``robustsparse train`` (e.g. CIFAR-10
  ResNet-20), attacked on 1,000 test examples of its own dataset spread evenly over the split
  (the examples ``robustsparse attack --n-examples 1000`` uses); its default grid is the one
  ``configs/cifar10-resnet20.yaml`` and the README's ``robustsparse attack`` example use: FGSM at 1, 2, ..., 8 /255 and
  PGD at 1, 2, 4, 8 /255.

The variants timed:

- plain loop: one torchattacks object per eps, every example attacked, predictions of the
  returned examples counted (what most evaluation scripts do);
- package: ``attacks.evaluate`` (one gradient per example for the whole FGSM sweep, clean-wrong
  examples skipped, PGD early-stopped per example with its eps values stacked in one batch,
  every batch checked against its eps ball);
- reference path of the package: ``attacks.evaluate(..., efficient=False)`` (torchattacks objects
  plus the package's checks), to show what the checks cost.

Agreement: FGSM per example (must be identical); PGD against the plain loop over several seeds
(the random start is the only difference besides early stopping, which can only make it stronger).

Run from the repository root (digits: a few minutes on 2 busy CPU cores; a CIFAR-10 ResNet-20
checkpoint on one idle thread: 14 min as below, 4.5 min with --repeats 1 --pgd-seeds 2 --no-reference):
    .venv/bin/python benchmarks/attack_efficiency.py [--repeats 3] [--threads 1] [--json out.json]
    .venv/bin/python benchmarks/attack_efficiency.py --checkpoint runs/X/models/dense-s0 --repeats 3 --pgd-seeds 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchattacks
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

import attacks

FGSM_EPS = [f"{k}/255" for k in (1, 2, 4, 8, 16, 32, 64, 128)]
PGD_EPS = [f"{k}/255" for k in (8, 16, 32, 64)]
PGD_STEPS = 10
# Checkpoint default: the FGSM sweep of configs/cifar10-resnet20.yaml, the PGD eps of the README's attack example.
CHECKPOINT_FGSM_EPS = [f"{k}/255" for k in range(1, 9)]
CHECKPOINT_PGD_EPS = [f"{k}/255" for k in (1, 2, 4, 8)]


def make_model(mean: float, std: float) -> nn.Module:
    """The project's small CNN when robustsparse is importable, else an equivalent inline one."""
    try:
        from robustsparse.models import create_model

        return create_model("small_cnn", num_classes=10, in_channels=1, image_size=8, mean=(mean,), std=(std,))
    except ImportError:

        class Normalize(nn.Module):
            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return (x - mean) / std

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        return nn.Sequential(
            Normalize(),
            *block(1, 32),
            *block(32, 64),
            nn.MaxPool2d(2),
            *block(64, 128),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(128, 10),
        )


def train_digits(n_eval: int, epochs: int, seed: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor, dict]:
    """Train the model on the digits outside the evaluation set; return model and evaluation data."""
    torch.manual_seed(seed)
    digits = load_digits()
    images = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)
    labels = torch.tensor(digits.target, dtype=torch.long)
    train_idx, eval_idx = train_test_split(
        np.arange(len(labels)), test_size=n_eval, stratify=digits.target, random_state=seed
    )
    x_train, y_train = images[train_idx], labels[train_idx]
    model = make_model(float(x_train.mean()), float(x_train.std()))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(y_train))
        for i in range(0, len(y_train), 64):
            idx = perm[i : i + 64]
            loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    info = {
        "n_train": len(train_idx),
        "epochs": epochs,
        "train_s": time.perf_counter() - start,
        "params": sum(p.numel() for p in model.parameters()),
        "model": type(model).__name__,
    }
    return model, images[eval_idx], labels[eval_idx], info


def load_checkpoint_data(path: Path, n_eval: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor, dict]:
    """A trainer checkpoint and ``n_eval`` test examples of its dataset, as the project's evaluation picks them.

    The examples are spread evenly over the test split (``robustsparse.data.load_tensors``), so a
    class-sorted ImageFolder copy still gives every class.
    """
    from robustsparse import load_checkpoint
    from robustsparse.data import load_tensors
    from robustsparse.pipeline.evaluation import dataset_of

    start = time.perf_counter()
    model, meta = load_checkpoint(path, device="cpu")
    bundle = dataset_of(meta)
    x, y = load_tensors(bundle.test, n_eval)
    data, train = meta.get("data") or {}, meta.get("train") or {}
    info = {
        "checkpoint": str(path),
        "model": meta.get("arch", type(model).__name__),
        "dataset": data.get("dataset"),
        "data_root": data.get("root"),
        "n_train": data.get("train_examples"),
        "epochs": train.get("epochs"),
        "params": sum(p.numel() for p in model.parameters()),
        "load_s": time.perf_counter() - start,
    }
    return model, x, y, info


def plain_fgsm(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, eps_list: list[str]
) -> dict[str, np.ndarray]:
    """Plain loop, FGSM: one torchattacks object per eps, every example; per-example correctness."""
    return {
        f"fgsm@{eps}": _plain_run(model, x, y, batch_size, torchattacks.FGSM(model, eps=attacks.parse_eps(eps)))
        for eps in eps_list
    }


def plain_pgd(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int, eps_list: list[str]
) -> dict[str, np.ndarray]:
    """Plain loop, PGD-10 with random start seeded by ``seed``; per-example correctness."""
    out = {}
    for eps in eps_list:
        value = attacks.parse_eps(eps)
        torch.manual_seed(seed)
        attack = torchattacks.PGD(model, eps=value, alpha=value / 4, steps=PGD_STEPS, random_start=True)
        out[f"pgd@{eps}"] = _plain_run(model, x, y, batch_size, attack)
    return out


def _plain_run(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, attack: torchattacks.Attack
) -> np.ndarray:
    model.eval()
    correct = []
    for i in range(0, len(x), batch_size):
        adv = attack(x[i : i + batch_size], y[i : i + batch_size])
        with torch.no_grad():
            correct.append((model(adv).argmax(1) == y[i : i + batch_size]).numpy())
    return np.concatenate(correct)


def specs(fgsm_eps: list[str], pgd_eps: list[str]) -> list[attacks.AttackSpec]:
    """The grid as attack specs."""
    return attacks.expand_eps("fgsm", fgsm_eps) + attacks.expand_eps("pgd", pgd_eps, steps=PGD_STEPS)


def timed(fn: Callable[[], object]) -> tuple[object, float, float]:
    """Result, wall seconds and CPU seconds of this process for one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


class RowCounter:
    """Counts the examples the model is run on: with autograd (forward + backward) and without.

    A forward pre-hook (a public PyTorch API, removed by ``close``); it adds one Python call per
    batch, nothing next to a forward pass. The counts explain the timings: time is about
    ``a * grad_rows + b * no_grad_rows``.
    """

    def __init__(self, model: nn.Module) -> None:
        self.grad_rows = 0
        self.no_grad_rows = 0
        self._handle = model.register_forward_pre_hook(self._count)

    def _count(self, module: nn.Module, args: tuple[object, ...]) -> None:
        rows = len(args[0])  # type: ignore[arg-type]
        if torch.is_grad_enabled():
            self.grad_rows += rows
        else:
            self.no_grad_rows += rows

    def take(self) -> dict[str, int]:
        """The counts since the last call, then zero."""
        counts = {"grad_rows": self.grad_rows, "no_grad_rows": self.no_grad_rows}
        self.grad_rows = self.no_grad_rows = 0
        return counts

    def close(self) -> None:
        """Remove the hook."""
        self._handle.remove()


def benchmark(
    n_eval: int = 1000,
    epochs: int = 15,
    batch_size: int = 256,
    repeats: int = 3,
    seed: int = 0,
    pgd_seeds: int = 5,
    fgsm_eps: list[str] | None = None,
    pgd_eps: list[str] | None = None,
    checkpoint: Path | None = None,
    reference: bool = True,
) -> dict:
    """Run the comparison; returns every figure as plain data.

    The variants are interleaved within each repeat, so load from other processes hits them alike;
    CPU time of this process is reported beside wall time because it is far less sensitive to load.

    Args:
        checkpoint: a trainer checkpoint to attack on its own test data instead of training the
            digits model (``epochs`` is then unused); its default grid is ``CHECKPOINT_*_EPS``.
        reference: also time the package's reference path (``efficient=False``) once.
    """
    if checkpoint is None:
        fgsm_eps = list(fgsm_eps or FGSM_EPS)
        pgd_eps = list(pgd_eps or PGD_EPS)
        model, x, y, info = train_digits(n_eval, epochs, seed)
    else:
        fgsm_eps = list(fgsm_eps or CHECKPOINT_FGSM_EPS)
        pgd_eps = list(pgd_eps or CHECKPOINT_PGD_EPS)
        model, x, y, info = load_checkpoint_data(checkpoint, n_eval)
    grid = specs(fgsm_eps, pgd_eps)
    fgsm_specs, pgd_specs = grid[: len(fgsm_eps)], grid[len(fgsm_eps) :]
    variants: dict[str, Callable[[], object]] = {
        "plain_fgsm": lambda: plain_fgsm(model, x, y, batch_size, fgsm_eps),
        "package_fgsm": lambda: attacks.evaluate(model, x, y, fgsm_specs, batch_size=batch_size, seed=seed),
        "plain_pgd": lambda: plain_pgd(model, x, y, batch_size, seed, pgd_eps),
        "package_pgd": lambda: attacks.evaluate(model, x, y, pgd_specs, batch_size=batch_size, seed=seed),
        "package_total": lambda: attacks.evaluate(model, x, y, grid, batch_size=batch_size, seed=seed),
    }
    wall: dict[str, list[float]] = {k: [] for k in variants}
    cpu: dict[str, list[float]] = {k: [] for k in variants}
    outputs: dict[str, object] = {}
    rows: dict[str, dict[str, int]] = {}
    counter = RowCounter(model)
    for _ in range(repeats):
        for name, fn in variants.items():
            counter.take()
            outputs[name], w, c = timed(fn)
            rows[name] = counter.take()  # the same in every repeat
            wall[name].append(w)
            cpu[name].append(c)
    counter.close()
    rows["plain_total"] = {k: rows["plain_fgsm"][k] + rows["plain_pgd"][k] for k in rows["plain_fgsm"]}
    for table in (wall, cpu):
        table["plain_total"] = [a + b for a, b in zip(table["plain_fgsm"], table["plain_pgd"])]
    ref, ref_wall, ref_cpu = (
        timed(lambda: attacks.evaluate(model, x, y, grid, batch_size=batch_size, seed=seed, efficient=False))
        if reference
        else (None, None, None)
    )
    plain = {**outputs["plain_fgsm"], **outputs["plain_pgd"]}  # type: ignore[dict-item]
    ours = outputs["package_total"]
    # The timed plain run already is the run with seed `seed` (CPU kernels are deterministic here).
    pgd_plain_seeds = [
        outputs["plain_pgd"] if s == seed else plain_pgd(model, x, y, batch_size, s, pgd_eps) for s in range(pgd_seeds)
    ]

    clean = ours.clean_correct  # type: ignore[attr-defined]
    agreement = []
    for spec in grid:
        name = f"{spec.name}@{spec.eps_label}"
        mine = ours[spec].correct  # type: ignore[index]
        theirs = plain[name]
        row = {
            "attack": spec.name,
            "eps": spec.eps_label,
            "n": len(mine),
            "acc_package": float(mine.mean()),
            "acc_reference_path": float(ref[spec].accuracy) if ref is not None else None,  # type: ignore[index]
            "acc_plain": float(theirs.mean()),
            "acc_plain_clean_mistakes_not_robust": float((theirs & clean).mean()),
            "examples_differ": int((mine != (theirs & clean)).sum()),
            "plain_correct_but_clean_wrong": int((theirs & ~clean).sum()),
        }
        if spec.name == "pgd":
            accs = [float(run[name].mean()) for run in pgd_plain_seeds]
            row.update(
                {
                    "acc_plain_seed_min": min(accs),
                    "acc_plain_seed_max": max(accs),
                    "acc_plain_seed_sd": statistics.pstdev(accs),
                }
            )
        agreement.append(row)

    med = statistics.median
    seconds = {f"{k}_wall": med(v) for k, v in wall.items()} | {f"{k}_cpu": med(v) for k, v in cpu.items()}
    seconds |= {"reference_path_total_wall": ref_wall, "reference_path_total_cpu": ref_cpu}
    speedup = {
        f"{part}_{kind}": seconds[f"plain_{part}_{kind}"] / seconds[f"package_{part}_{kind}"]
        for part in ("fgsm", "pgd", "total")
        for kind in ("wall", "cpu")
    }
    return {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "torchattacks": torchattacks.__version__,
            "load_average": os.getloadavg(),
        },
        "setup": {
            **info,
            "n_eval": len(y),
            "batch_size": batch_size,
            "repeats": repeats,
            "clean_accuracy": float(clean.mean()),
            "fgsm_eps": fgsm_eps,
            "pgd_eps": pgd_eps,
            "pgd_steps": PGD_STEPS,
            "pgd_plain_seeds": pgd_seeds,
        },
        "seconds": seconds,
        "all_wall": wall,
        "speedup": speedup,
        "model_rows": rows,
        "agreement": agreement,
    }


def to_markdown(report: dict) -> str:
    """The figures as a Markdown snippet for RESULTS.md."""
    s, sp, st = report["seconds"], report["speedup"], report["setup"]
    source = f"checkpoint {st['checkpoint']}" if "checkpoint" in st else "digits, trained in the script"
    lines = [
        f"{st['model']} ({st['params']:,} parameters; {source}): clean accuracy {st['clean_accuracy']:.3f} on "
        f"{st['n_eval']} examples; batch size {st['batch_size']}; median of {st['repeats']} interleaved runs; "
        f"{report['machine']['torch_threads']} torch thread(s)",
        "",
        "| grid | plain loop wall (s) | package wall (s) | speed-up wall | plain CPU (s) | package CPU (s) "
        "| speed-up CPU |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    names = {
        "fgsm": f"FGSM x {len(st['fgsm_eps'])} eps",
        "pgd": f"PGD-{st['pgd_steps']} x {len(st['pgd_eps'])} eps",
        "total": "whole grid",
    }
    for part, title in names.items():
        lines.append(
            f"| {title} | {s[f'plain_{part}_wall']:.2f} | {s[f'package_{part}_wall']:.2f} | {sp[f'{part}_wall']:.1f}x "
            f"| {s[f'plain_{part}_cpu']:.2f} | {s[f'package_{part}_cpu']:.2f} | {sp[f'{part}_cpu']:.1f}x |"
        )
    r = report["model_rows"]
    lines += [
        "",
        "examples run through the model (forward+backward / forward only):",
        "",
        "| grid | plain loop | package |",
        "| --- | ---: | ---: |",
    ]
    for part, title in names.items():
        plain, ours = r[f"plain_{part}"], r[f"package_{part}"]
        lines.append(
            f"| {title} | {plain['grad_rows']:,} / {plain['no_grad_rows']:,} "
            f"| {ours['grad_rows']:,} / {ours['no_grad_rows']:,} |"
        )
    if s["reference_path_total_wall"] is not None:
        lines += [
            "",
            f"reference path (`efficient=False`: torchattacks objects + checks), whole grid: "
            f"{s['reference_path_total_wall']:.2f} s wall, {s['reference_path_total_cpu']:.2f} s CPU",
        ]
    lines += [
        "",
        'accuracy over all N; "plain*" counts clean mistakes as not robust, as the package does',
        "",
        "| attack | eps | package | plain loop | plain* | examples differing | plain seeds (min-max, sd) |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in report["agreement"]:
        seeds = (
            f"{r['acc_plain_seed_min']:.3f}-{r['acc_plain_seed_max']:.3f}, {r['acc_plain_seed_sd']:.4f}, "
            f"{st['pgd_plain_seeds']} seeds"
            if "acc_plain_seed_min" in r
            else ""
        )
        lines.append(
            f"| {r['attack']} | {r['eps']} | {r['acc_package']:.3f} | {r['acc_plain']:.3f} | "
            f"{r['acc_plain_clean_mistakes_not_robust']:.3f} | {r['examples_differ']} | {seeds} |"
        )
    return "\n".join(lines)


def write_json(report: dict, path: Path) -> None:
    """Write the report atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as tmp:
        json.dump(report, tmp, indent=2)
    os.replace(tmp.name, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="a `robustsparse train` model folder or file to attack on its own test data "
        "(default: train the small CNN on digits)",
    )
    parser.add_argument("--n-eval", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=15, help="digits training epochs (not with --checkpoint)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--fgsm-eps",
        default=None,
        help=f"comma-separated FGSM eps values (digits default {','.join(FGSM_EPS)}; "
        f"checkpoint default {','.join(CHECKPOINT_FGSM_EPS)})",
    )
    parser.add_argument(
        "--pgd-eps",
        default=None,
        help=f"comma-separated PGD eps values (digits default {','.join(PGD_EPS)}; "
        f"checkpoint default {','.join(CHECKPOINT_PGD_EPS)})",
    )
    parser.add_argument("--pgd-seeds", type=int, default=5, help="plain-loop PGD seeds for the agreement spread")
    parser.add_argument(
        "--no-reference",
        dest="reference",
        action="store_false",
        help="skip timing the package's reference path (efficient=False)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: least sensitive to load)")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    report = benchmark(
        args.n_eval,
        args.epochs,
        args.batch_size,
        args.repeats,
        args.seed,
        pgd_seeds=args.pgd_seeds,
        fgsm_eps=args.fgsm_eps.split(",") if args.fgsm_eps else None,
        pgd_eps=args.pgd_eps.split(",") if args.pgd_eps else None,
        checkpoint=args.checkpoint,
        reference=args.reference,
    )
    print(to_markdown(report))
    print(f"\nmachine: {report['machine']}")
    if args.json:
        write_json(report, args.json)


if __name__ == "__main__":
    main()
