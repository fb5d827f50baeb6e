"""Benchmark: our ``autoattack`` against the reference AutoAttack (Croce & Hein 2020) on the same images.

Our ``autoattack`` (``attacks.registry``) is assembled from torchattacks parts. The reference is
the authors' code (fra31/auto-attack, MIT), shipped as a wheel in ``../shared/wheels/`` and
installed into the environment for this check only:

    .venv/bin/pip install --no-deps ../shared/wheels/autoattack-0.1-py3-none-any.whl

For each case (a trainer checkpoint, a number of test examples spread evenly over its test split,
exactly the examples ``robustsparse attack --n-examples N`` uses, and an Linf eps), both run the
standard version (APGD-CE, APGD-T with 9 targets, FAB-T with 9 targets, Square with 5,000
queries, cascaded over the points still robust) on the same images and the same model (eval mode):

- ours: ``attacks.evaluate(model, x, y, ["autoattack:eps=..."], seed=s)`` for each of
  ``--our-seeds``;
- reference: ``AutoAttack(model, norm="Linf", eps=..., version="standard", seed=s, device="cpu")
  .run_standard_evaluation(x, y, bs=...)`` for each of ``--ref-seeds``, its returned images
  scored by the model.

Reported per case: clean accuracy, robust accuracy of both (first seed) and over the seeds
(min-max), the number of examples whose outcome differs between ours and the reference at the
first seed, and the wall time of one run of each. Agreement means: our robust accuracy lies
within 1 point of the reference's, or inside the reference's spread over seeds.

Default case: the digits checkpoint ``runs/digits-quick/models/dense-s0`` (``make run``), all 360
test digits, eps 0.1 (about 25/255: about a third stays robust, so every stage of the cascade
runs; at 8/255 nearly every digit is robust and the cascade is hardly exercised). A CIFAR-10 JPEG
ResNet-20 from ``robustsparse train`` (``imagefolder``) is a ``--case PATH,200,8/255``.

Cost, in process CPU seconds on one thread of the development machine: about 60 s per run on
the digits case (the default, 1 of ours + 3 of the reference: about 4 min on an idle core) and
about 20 s per run for an undefended ResNet-20 on 200 CIFAR images at 8/255.

Run from the repository root (figures: benchmarks/RESULTS.md, "AutoAttack agreement"):
    PYTHONPATH=. .venv/bin/python benchmarks/autoattack_agreement.py [--json out.json]
    PYTHONPATH=. .venv/bin/python benchmarks/autoattack_agreement.py --case runs/X/models/dense-s0,200,8/255 \\
        --our-seeds 0 1 --ref-seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchattacks
from torch import nn

import attacks
from attacks.spec import parse_eps

log = logging.getLogger("autoattack_agreement")

DEFAULT_CASES = ("runs/digits-quick/models/dense-s0,360,0.1",)
AGREEMENT_POINTS = 1.0
"""The issue's bar: robust accuracies within 1 point (or within the reference's spread over seeds)."""


@dataclass(frozen=True)
class Case:
    """One checkpoint, how many test examples, one Linf eps."""

    checkpoint: Path
    n_examples: int | None
    eps_label: str

    @property
    def eps(self) -> float:
        return parse_eps(self.eps_label)

    @classmethod
    def parse(cls, text: str) -> Case:
        """``PATH,N,EPS`` (``N`` may be ``all``)."""
        try:
            path, n, eps = text.rsplit(",", 2)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"--case must be PATH,N,EPS (e.g. runs/x/models/dense-s0,500,8/255), got {text!r}"
            ) from None
        n_examples = None if n.strip().lower() in ("all", "") else int(n)
        parse_eps(eps.strip())  # refuse a bad eps before anything runs
        return cls(Path(path), n_examples, eps.strip())


def reference_autoattack() -> type:
    """The reference ``AutoAttack`` class, refusing anything else named ``autoattack``."""
    import autoattack

    cls = getattr(autoattack, "AutoAttack", None)
    if cls is None or not hasattr(cls, "run_standard_evaluation"):
        raise SystemExit(f"the module 'autoattack' at {autoattack.__file__} is not the reference AutoAttack")
    return cls


def load_case(case: Case) -> tuple[nn.Module, torch.Tensor, torch.Tensor, dict]:
    """The checkpoint (eval mode, CPU) and its fixed evaluation examples, as the project's evaluation picks them."""
    from robustsparse import load_checkpoint
    from robustsparse.data import load_tensors
    from robustsparse.pipeline.evaluation import dataset_of

    model, meta = load_checkpoint(case.checkpoint, device="cpu")
    x, y = load_tensors(dataset_of(meta).test, case.n_examples)
    data = meta.get("data") or {}
    info = {
        "checkpoint": str(case.checkpoint),
        "arch": meta.get("arch", type(model).__name__),
        "dataset": data.get("label") or data.get("dataset"),
        "n_train": data.get("train_examples"),
        "epochs": (meta.get("train") or {}).get("epochs"),
    }
    return model.eval(), x, y, info


def predict(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(c).argmax(1) for c in x.split(batch_size)])


def run_ours(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: str, seed: int, batch_size: int
) -> tuple[np.ndarray, tuple[float, float]]:
    """Per-example robust flags of our ``autoattack`` and its wall time."""
    start, cpu = time.perf_counter(), time.process_time()
    result = attacks.evaluate(model, x, y, [f"autoattack:eps={eps}"], seed=seed, batch_size=batch_size)
    elapsed = (time.perf_counter() - start, time.process_time() - cpu)
    (outcome,) = [o for o in result if o.spec.name == "autoattack"]
    return np.asarray(outcome.correct, dtype=bool), elapsed


def run_reference(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int, batch_size: int
) -> tuple[np.ndarray, tuple[float, float]]:
    """Per-example robust flags of the reference AutoAttack (standard, Linf) and its wall time."""
    AutoAttack = reference_autoattack()  # noqa: N806 - the reference's class name
    adversary = AutoAttack(model, norm="Linf", eps=eps, version="standard", seed=seed, device="cpu", verbose=False)
    start, cpu = time.perf_counter(), time.process_time()
    x_adv = adversary.run_standard_evaluation(x.clone(), y.clone(), bs=batch_size)
    elapsed = (time.perf_counter() - start, time.process_time() - cpu)
    linf = (x_adv - x).abs().flatten(1).amax(1)
    if float(linf.max()) > eps + 1e-6 or float(x_adv.min()) < 0 or float(x_adv.max()) > 1:
        raise RuntimeError(
            f"the reference returned images outside the eps ball or [0, 1] (max Linf {float(linf.max()):.5f})"
        )
    correct = (predict(model, x_adv, batch_size) == y).numpy()
    return correct, elapsed


def measure(case: Case, our_seeds: list[int], ref_seeds: list[int], batch_size: int) -> dict:
    """Both AutoAttacks on one case; the figures of one table row."""
    model, x, y, info = load_case(case)
    clean = (predict(model, x, batch_size) == y).numpy()
    ours, refs = {}, {}
    for runs, who, seeds, run in (
        (ours, "ours", our_seeds, lambda s: run_ours(model, x, y, case.eps_label, s, batch_size)),
        (refs, "reference", ref_seeds, lambda s: run_reference(model, x, y, case.eps, s, batch_size)),
    ):
        for seed in seeds:
            runs[seed] = run(seed)
            correct, (wall, cpu) = runs[seed]
            log.info(
                "%s eps %s, %s seed %d: robust %.4f (%d/%d), %.0f s wall, %.0f s CPU",
                case.checkpoint,
                case.eps_label,
                who,
                seed,
                correct.mean(),
                correct.sum(),
                len(correct),
                wall,
                cpu,
            )
    ours_first, refs_first = ours[our_seeds[0]][0], refs[ref_seeds[0]][0]
    our_accs = [float(c.mean()) for c, _ in ours.values()]
    ref_accs = [float(c.mean()) for c, _ in refs.values()]
    gap_points = 100 * abs(our_accs[0] - ref_accs[0])
    within_spread = min(ref_accs) <= our_accs[0] <= max(ref_accs)
    return {
        **info,
        "n": len(y),
        "eps": case.eps_label,
        "clean_accuracy": float(clean.mean()),
        "ours_accuracy": our_accs[0],
        "ours_accuracy_by_seed": dict(zip(map(str, our_seeds), our_accs)),
        "reference_accuracy": ref_accs[0],
        "reference_accuracy_by_seed": dict(zip(map(str, ref_seeds), ref_accs)),
        "reference_seed_sd": statistics.pstdev(ref_accs),
        "examples_differ": int((ours_first != refs_first).sum()),
        "robust_ours_only": int((ours_first & ~refs_first).sum()),
        "robust_reference_only": int((~ours_first & refs_first).sum()),
        "ours_s": statistics.median(t[0] for _, t in ours.values()),
        "reference_s": statistics.median(t[0] for _, t in refs.values()),
        "ours_cpu_s": statistics.median(t[1] for _, t in ours.values()),
        "reference_cpu_s": statistics.median(t[1] for _, t in refs.values()),
        "gap_points": gap_points,
        "agree": gap_points <= AGREEMENT_POINTS or within_spread,
    }


def to_markdown(rows: list[dict], machine: dict) -> str:
    """The table for RESULTS.md."""
    lines = [
        f"{machine['torch_threads']} torch thread(s), batch size {machine['batch_size']}, torch {machine['torch']}, "
        f"torchattacks {machine['torchattacks']}; load average at the end {machine['load_average'][0]:.1f}",
        "",
        "| model (data) | n | eps | clean | ours (seed 0) | reference (seed 0) | ours over seeds | reference over seeds "
        "| examples differing (ours-only robust / ref-only robust) | ours wall / CPU (s) | reference wall / CPU (s) "
        "| agree |",
        "| --- | ---: | --- | ---: | ---: | ---: | --- | --- | --- | ---: | ---: | --- |",
    ]
    for r in rows:

        def span(accs: dict) -> str:
            vals = list(accs.values())
            return f"{min(vals):.3f}-{max(vals):.3f} ({len(vals)} seeds)" if len(vals) > 1 else "-"

        lines.append(
            f"| {r['arch']} ({r['dataset']}) | {r['n']} | {r['eps']} | {r['clean_accuracy']:.3f} | {r['ours_accuracy']:.3f} "
            f"| {r['reference_accuracy']:.3f} | {span(r['ours_accuracy_by_seed'])} | {span(r['reference_accuracy_by_seed'])} "
            f"| {r['examples_differ']} ({r['robust_ours_only']} / {r['robust_reference_only']}) "
            f"| {r['ours_s']:.0f} / {r['ours_cpu_s']:.0f} | {r['reference_s']:.0f} / {r['reference_cpu_s']:.0f} | {'yes' if r['agree'] else 'NO'} ({r['gap_points']:.1f} points) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--case", type=Case.parse, action="append", help="PATH,N,EPS (repeatable); default: digits dense-s0, 360, 0.1"
    )
    parser.add_argument("--our-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--ref-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    reference_autoattack()  # fail before any work when the reference is missing or not the reference
    cases = args.case or [Case.parse(c) for c in DEFAULT_CASES]
    for case in cases:
        if not case.checkpoint.exists():
            parser.error(f"checkpoint {case.checkpoint} not found: train it first (see the module docstring)")
    rows = []
    for case in cases:
        rows.append(measure(case, args.our_seeds, args.ref_seeds, args.batch_size))
        print(json.dumps(rows[-1]), flush=True)
    machine = {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torchattacks": torchattacks.__version__,
        "batch_size": args.batch_size,
        "load_average": os.getloadavg(),
    }
    print(to_markdown(rows, machine))
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "cases": rows}, indent=2))
    return 0 if all(r["agree"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
