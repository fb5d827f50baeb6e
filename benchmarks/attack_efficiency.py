"""Benchmark: the attacks package's efficient engines against a plain torchattacks loop.

Same grid both ways, on 1,000 scikit-learn digits the model was not trained on:
FGSM at 8 eps values and PGD-10 (alpha = eps/4, random start) at 4 eps values.

- plain loop: one torchattacks object per eps, every example attacked, predictions of the
  returned examples counted (what most evaluation scripts do);
- package: ``attacks.evaluate`` (one gradient per example for the whole FGSM sweep, clean-wrong
  examples skipped, PGD early-stopped per example with its eps values stacked in one batch,
  every batch checked against its eps ball);
- reference path of the package: ``attacks.evaluate(..., efficient=False)`` (torchattacks objects
  plus the package's checks), to show what the checks cost.

Agreement: FGSM per example (must be identical); PGD against the plain loop over several seeds
(the random start is the only difference besides early stopping, which can only make it stronger).

Run from the repository root (about a minute on 2 CPU cores):
    .venv/bin/python benchmarks/attack_efficiency.py [--repeats 3] [--json out.json]
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

        return nn.Sequential(Normalize(), *block(1, 32), *block(32, 64), nn.MaxPool2d(2), *block(64, 128),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10))


def train_digits(n_eval: int, epochs: int, seed: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor, dict]:
    """Train the model on the digits outside the evaluation set; return model and evaluation data."""
    torch.manual_seed(seed)
    digits = load_digits()
    images = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)
    labels = torch.tensor(digits.target, dtype=torch.long)
    train_idx, eval_idx = train_test_split(np.arange(len(labels)), test_size=n_eval, stratify=digits.target,
                                           random_state=seed)
    x_train, y_train = images[train_idx], labels[train_idx]
    model = make_model(float(x_train.mean()), float(x_train.std()))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(y_train))
        for i in range(0, len(y_train), 64):
            idx = perm[i:i + 64]
            loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    info = {"n_train": len(train_idx), "epochs": epochs, "train_s": time.perf_counter() - start,
            "params": sum(p.numel() for p in model.parameters()), "model": type(model).__name__}
    return model, images[eval_idx], labels[eval_idx], info


def plain_loop(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int,
               pgd_seed: int = 0) -> dict[str, np.ndarray]:
    """One torchattacks object per eps, every example attacked; per-example correctness."""
    model.eval()
    out: dict[str, np.ndarray] = {}

    def run(name: str, attack: torchattacks.Attack) -> None:
        correct = []
        for i in range(0, len(x), batch_size):
            adv = attack(x[i:i + batch_size], y[i:i + batch_size])
            with torch.no_grad():
                correct.append((model(adv).argmax(1) == y[i:i + batch_size]).numpy())
        out[name] = np.concatenate(correct)

    for eps in FGSM_EPS:
        run(f"fgsm@{eps}", torchattacks.FGSM(model, eps=attacks.parse_eps(eps)))
    for eps in PGD_EPS:
        value = attacks.parse_eps(eps)
        torch.manual_seed(pgd_seed)
        run(f"pgd@{eps}", torchattacks.PGD(model, eps=value, alpha=value / 4, steps=PGD_STEPS, random_start=True))
    return out


def specs() -> list[attacks.AttackSpec]:
    """The grid as attack specs."""
    return attacks.expand_eps("fgsm", FGSM_EPS) + attacks.expand_eps("pgd", PGD_EPS, steps=PGD_STEPS)


def timed(fn: Callable[[], object], repeats: int) -> tuple[object, list[float]]:
    """Result of the last call and the wall time of every call."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return result, times


def benchmark(n_eval: int = 1000, epochs: int = 15, batch_size: int = 256, repeats: int = 3, seed: int = 0,
              pgd_seeds: int = 5) -> dict:
    """Run the comparison; returns every figure as plain data."""
    model, x, y, info = train_digits(n_eval, epochs, seed)
    grid = specs()
    plain, plain_times = timed(lambda: plain_loop(model, x, y, batch_size), repeats)
    ours, our_times = timed(lambda: attacks.evaluate(model, x, y, grid, batch_size=batch_size, seed=seed), repeats)
    ref, ref_times = timed(lambda: attacks.evaluate(model, x, y, grid, batch_size=batch_size, seed=seed,
                                                    efficient=False), 1)
    # Split timings: FGSM grid alone and PGD grid alone (each includes one clean pass for ours).
    fgsm_specs, pgd_specs = grid[:len(FGSM_EPS)], grid[len(FGSM_EPS):]
    _, our_fgsm = timed(lambda: attacks.evaluate(model, x, y, fgsm_specs, batch_size=batch_size), repeats)
    _, our_pgd = timed(lambda: attacks.evaluate(model, x, y, pgd_specs, batch_size=batch_size, seed=seed), repeats)

    def plain_part(kind: str) -> Callable[[], None]:
        def run() -> None:
            for eps in FGSM_EPS if kind == "fgsm" else PGD_EPS:
                value = attacks.parse_eps(eps)
                atk = (torchattacks.FGSM(model, eps=value) if kind == "fgsm" else
                       torchattacks.PGD(model, eps=value, alpha=value / 4, steps=PGD_STEPS, random_start=True))
                for i in range(0, len(x), batch_size):
                    adv = atk(x[i:i + batch_size], y[i:i + batch_size])
                    with torch.no_grad():
                        model(adv).argmax(1)
        return run

    _, plain_fgsm = timed(plain_part("fgsm"), repeats)
    _, plain_pgd = timed(plain_part("pgd"), repeats)
    pgd_plain_seeds = [plain_loop(model, x, y, batch_size, pgd_seed=s) for s in range(pgd_seeds)]

    clean = ours.clean_correct  # type: ignore[union-attr]
    rows = []
    for spec in grid:
        name = f"{spec.name}@{spec.eps_label}"
        mine = ours[spec].correct  # type: ignore[index]
        theirs = plain[name]  # type: ignore[index]
        row = {
            "attack": spec.name, "eps": spec.eps_label, "n": len(mine),
            "acc_package": float(mine.mean()), "acc_reference_path": float(ref[spec].accuracy),  # type: ignore[index]
            "acc_plain": float(theirs.mean()),
            "examples_differ": int((mine != (theirs & clean)).sum()),
            "plain_correct_but_clean_wrong": int((theirs & ~clean).sum()),
        }
        if spec.name == "pgd":
            accs = [float(run[name].mean()) for run in pgd_plain_seeds]
            row.update({"acc_plain_seed_min": min(accs), "acc_plain_seed_max": max(accs),
                        "acc_plain_seed_sd": statistics.pstdev(accs)})
        rows.append(row)

    med = statistics.median
    return {
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "torchattacks": torchattacks.__version__},
        "setup": {**info, "n_eval": n_eval, "batch_size": batch_size, "repeats": repeats,
                  "clean_accuracy": float(clean.mean()), "fgsm_eps": FGSM_EPS, "pgd_eps": PGD_EPS,
                  "pgd_steps": PGD_STEPS, "pgd_plain_seeds": pgd_seeds},
        "seconds": {
            "plain_total": med(plain_times), "package_total": med(our_times), "reference_path_total": med(ref_times),
            "plain_fgsm": med(plain_fgsm), "package_fgsm": med(our_fgsm),
            "plain_pgd": med(plain_pgd), "package_pgd": med(our_pgd),
            "all_plain": plain_times, "all_package": our_times,
        },
        "speedup": {"total": med(plain_times) / med(our_times), "fgsm": med(plain_fgsm) / med(our_fgsm),
                    "pgd": med(plain_pgd) / med(our_pgd)},
        "agreement": rows,
    }


def to_markdown(report: dict) -> str:
    """The figures as a Markdown snippet for RESULTS.md."""
    s, sp, st = report["seconds"], report["speedup"], report["setup"]
    lines = [
        f"clean accuracy {st['clean_accuracy']:.3f} on {st['n_eval']} examples; batch size {st['batch_size']}; "
        f"median of {st['repeats']} runs",
        "",
        "| grid | plain torchattacks loop (s) | attacks.evaluate (s) | speed-up |",
        "| --- | ---: | ---: | ---: |",
        f"| FGSM x {len(st['fgsm_eps'])} eps | {s['plain_fgsm']:.2f} | {s['package_fgsm']:.2f} | {sp['fgsm']:.1f}x |",
        f"| PGD-{st['pgd_steps']} x {len(st['pgd_eps'])} eps | {s['plain_pgd']:.2f} | {s['package_pgd']:.2f} | {sp['pgd']:.1f}x |",
        f"| whole grid | {s['plain_total']:.2f} | {s['package_total']:.2f} | {sp['total']:.1f}x |",
        "",
        f"reference path (`efficient=False`, torchattacks objects + checks): {s['reference_path_total']:.2f} s",
        "",
        "| attack | eps | package | plain loop | examples differing | plain seeds (min-max, sd) |",
        "| --- | --- | ---: | ---: | ---: | --- |",
    ]
    for r in report["agreement"]:
        seeds = (f"{r['acc_plain_seed_min']:.3f}-{r['acc_plain_seed_max']:.3f}, {r['acc_plain_seed_sd']:.4f}"
                 if "acc_plain_seed_min" in r else "")
        lines.append(f"| {r['attack']} | {r['eps']} | {r['acc_package']:.3f} | {r['acc_plain']:.3f} | "
                     f"{r['examples_differ']} | {seeds} |")
    return "\n".join(lines)


def write_json(report: dict, path: Path) -> None:
    """Write the report atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp") as tmp:
        json.dump(report, tmp, indent=2)
    os.replace(tmp.name, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-eval", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write every figure to this JSON file")
    args = parser.parse_args()
    report = benchmark(args.n_eval, args.epochs, args.batch_size, args.repeats, args.seed)
    print(to_markdown(report))
    print(f"\nmachine: {report['machine']}")
    if args.json:
        write_json(report, args.json)


if __name__ == "__main__":
    main()
