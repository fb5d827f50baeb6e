"""The methods table of benchmarks/RESULTS.md from a finished run folder (e.g. configs/cifar10-methods.yaml).

    .venv/bin/python benchmarks/methods_table.py runs/cifar10-methods

One row per model: achieved sparsity, effective MACs (share of the run's dense model: a low-rank
model's own `dense_macs` are its factorised network's), clean accuracy and FGSM / PGD-10 (and with
`--attacks`, e.g. AutoAttack) robust accuracy at 2/255 and 8/255 with 95% Wilson intervals (on the
run's attack examples), training time and total training epochs, as Markdown. With `--per-epoch
MODEL` (e.g. dense-plain-s0, a robust run's plainly trained control), three more columns from each
model's train_log.csv: seconds per training epoch (mean over its own epochs), that as a multiple of
MODEL's, and the share of it spent crafting adversarial examples (`adversarial_seconds`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reports.contract import MODELS_DIR, TRAIN_LOG_FILE  # noqa: E402
from reports.load import load_meta, load_results  # noqa: E402

DEFAULT_EPS = ("2/255", "8/255")
DEFAULT_ATTACKS = ("fgsm", "pgd")
LABELS = {"fgsm": "FGSM", "autoattack": "AutoAttack", "square": "Square"}


def _columns(eps: tuple[str, ...], attacks: tuple[str, ...] = DEFAULT_ATTACKS) -> list[tuple[str, str]]:
    return [("clean", "0")] + [(attack, e) for attack in attacks for e in eps]


def _cell(row: pd.Series) -> str:
    return f"{100 * row['accuracy']:.1f} [{100 * row['ci_low']:.1f}, {100 * row['ci_high']:.1f}]"


def epoch_seconds(run_dir: str | Path, model_id: str) -> tuple[float, float]:
    """Mean seconds per training epoch of one model and the mean of them spent crafting attacks."""
    log = pd.read_csv(Path(run_dir) / MODELS_DIR / model_id / TRAIN_LOG_FILE)
    return float(log["epoch_seconds"].mean()), float(log["adversarial_seconds"].mean())


def methods_table(
    run_dir: str | Path,
    eps: tuple[str, ...] = DEFAULT_EPS,
    attacks: tuple[str, ...] = DEFAULT_ATTACKS,
    per_epoch: str | None = None,
    pgd_steps: int = 10,
) -> str:
    """The Markdown table of one run, models in the run's order (dense first), `attacks` at `eps`;
    with `per_epoch` (a model id) the epoch-time columns relative to that model; PGD with `pgd_steps` steps."""
    columns = _columns(eps, attacks)
    results = load_results(run_dir)
    meta = load_meta(run_dir).set_index("model_id")
    dense = meta[meta["granularity"] == "dense"]["dense_macs"]
    steps = results["steps"].fillna(pgd_steps)
    labels = {**LABELS, "pgd": f"PGD-{pgd_steps}"}
    header = ["model", "method", "achieved sparsity", "effective MACs (of dense)"]
    header += ["clean" if a == "clean" else f"{labels.get(a, a)} {e}" for a, e in columns]
    header += ["training (s)", "epochs"]
    if per_epoch is not None:
        timing = {model_id: epoch_seconds(run_dir, model_id) for model_id in dict.fromkeys(results["model_id"])}
        reference, _ = timing[per_epoch] if per_epoch in timing else epoch_seconds(run_dir, per_epoch)
        header += ["s per epoch", f"x {per_epoch}", "crafting share"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model_id in dict.fromkeys(results["model_id"]):
        rows = results[(results["model_id"] == model_id) & ((results["attack"] != "pgd") | (steps == pgd_steps))]
        m = meta.loc[model_id]
        cells = [
            model_id,
            str(m["method"]),
            f"{m['achieved_sparsity']:.3f}",
            f"{m['effective_macs'] / (dense.max() if len(dense) else m['dense_macs']):.2f}",
        ]
        for attack, label in columns:
            hit = rows[(rows["attack"] == attack) & (rows["eps_label"] == label)]
            cells.append(_cell(hit.iloc[0]) if len(hit) else "-")
        cells += [f"{m['train_seconds']:.0f}", str(int(m["total_epochs"]))]
        if per_epoch is not None:
            seconds, crafting = timing[model_id]
            cells += [f"{seconds:.1f}", f"{seconds / reference:.2f}", f"{crafting / seconds:.0%}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--eps", default=",".join(DEFAULT_EPS), help="eps of the FGSM and PGD-10 columns")
    parser.add_argument("--attacks", default=",".join(DEFAULT_ATTACKS), help="attacks of the robust columns")
    parser.add_argument("--pgd-steps", type=int, default=10, help="the PGD column's number of steps")
    parser.add_argument("--per-epoch", metavar="MODEL", help="add epoch-time columns relative to this model")
    args = parser.parse_args()
    split = lambda text: tuple(e.strip() for e in text.split(","))  # noqa: E731
    print(methods_table(args.run_dir, split(args.eps), split(args.attacks), args.per_epoch, args.pgd_steps))


if __name__ == "__main__":
    main()
