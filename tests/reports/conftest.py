"""Synthetic finished run directories for the report tests, with answers known by construction.

`make_run` writes config.yaml, results.csv, outcomes.csv.gz, sanity.csv and models/<id>/{meta.json,
layer_sparsity.csv} exactly as the pipeline lays them out. Accuracies are set per model and attack
spec (dense levels minus a penalty per granularity x sparsity), and per-example outcomes are drawn
so that every row's n_correct is exactly the number of correct outcomes: each example has a
shared difficulty, each model adds its own noise, and the n_correct easiest examples are correct.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from reports.contract import MODEL_COST_COLUMNS, RESULT_COLUMNS

# what the attacks package writes as eps_kind "minimum_norm" (the rest is "bounded")
MIN_NORM = {"cw", "deepfool", "fab"}
# dense accuracy per attack and eps (as fractions) and clean
DENSE_CLEAN = 0.95
DENSE_ATTACK = {
    "fgsm": {2: 0.80, 4: 0.65, 8: 0.45},
    "pgd": {2: 0.70, 4: 0.50, 8: 0.30},
}
# robust-accuracy penalty (fraction) under every attack, per (granularity, sparsity)
ROBUST_PENALTY = {
    ("window", 0.5): 0.00,
    ("window", 0.7): 0.01,
    ("filter", 0.5): 0.04,
    ("filter", 0.7): 0.10,
}
CLEAN_PENALTY = {
    ("window", 0.5): 0.00,
    ("window", 0.7): 0.01,
    ("filter", 0.5): 0.02,
    ("filter", 0.7): 0.05,
}


def _wilson(k: int, n: int) -> tuple[float, float]:
    ci = stats.binomtest(k, n).proportion_ci(method="wilson")
    return ci.low, ci.high


def _draw(difficulty: np.ndarray, rng: np.random.Generator, accuracy: float) -> np.ndarray:
    """Outcomes with exactly round(accuracy * n) correct: the easiest examples for this model."""
    n = difficulty.size
    k = int(round(accuracy * n))
    score = difficulty + rng.normal(0.0, 0.03, n)
    correct = np.zeros(n, dtype=int)
    correct[np.argsort(score, kind="stable")[:k]] = 1
    return correct


def make_run(
    root: Path,
    *,
    granularities: Sequence[str] = ("window", "filter"),
    sparsities: Sequence[float] = (0.5, 0.7),
    seeds: Sequence[int] = (0, 1),
    attacks: Mapping[str, Mapping[int, float]] | None = None,
    robust_penalty: Mapping[tuple[str, float], float] | None = None,
    clean_penalty: Mapping[tuple[str, float], float] | None = None,
    n_examples: int = 300,
    include_dense: bool = True,
    include_cw: bool = False,
    failing_check: bool = False,
    not_run_check: bool = False,
    methods: Sequence[str] = ("campfire",),
    achieved: Mapping[tuple[str, str, float], float] | None = None,
    families: Sequence[tuple[str, str]] | None = None,
    costs: Mapping[tuple[str, str, float], tuple[float, float]] | None = None,
    cost_columns: bool = False,
    extra_dense: Sequence[str] = (),
) -> Path:
    """Write a synthetic finished run directory under `root` and return it.

    With several `methods`, every method is trained at every granularity and sparsity, its model ids
    start with the method, and the penalties may be keyed (method, granularity, sparsity) as well as
    (granularity, sparsity). `achieved` sets a family's achieved sparsity (default: target + 0.001).
    `families` replaces methods x granularities by the (method, granularity) pairs given (ids then
    always start with the method). `costs` sets a family's (effective MACs, non-zero parameters) as
    fractions of dense (default: 1 - achieved sparsity over all weights); a family with a cost of
    its own is written as a low-rank model would be (its `params` and `dense_macs` are those of its
    smaller network, not the dense one's). `cost_columns` writes the `MODEL_COST_COLUMNS` into
    results.csv too (else only into meta.json, as results.csv files before they existed).
    `extra_dense` adds a dense model per seed for each method named (e.g. "dense-mixture").
    """
    attacks = DENSE_ATTACK if attacks is None else attacks
    robust_penalty = ROBUST_PENALTY if robust_penalty is None else robust_penalty
    clean_penalty = CLEAN_PENALTY if clean_penalty is None else clean_penalty
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1234)
    difficulty = rng.uniform(0.0, 1.0, n_examples)

    models = []
    for seed in seeds:
        if include_dense:
            models.append(dict(model_id=f"dense-s{seed}", method="dense", granularity="dense", target=0.0, seed=seed))
        for method in extra_dense:
            models.append(dict(model_id=f"{method}-s{seed}", method=method, granularity="dense", target=0.0, seed=seed))
        pairs = families or [(method, g) for method in methods for g in granularities]
        for method, g in pairs:
            for t in sparsities:
                prefix = f"{method}-" if len(methods) > 1 or families else ""
                model_id = f"{prefix}{g}-{round(t * 100)}-s{seed}"
                models.append(dict(model_id=model_id, method=method, granularity=g, target=t, seed=seed))

    rows, outcome_frames = [], []
    for m_index, m in enumerate(models):
        mrng = np.random.default_rng(100 + m_index)
        sparse = m["granularity"] != "dense"
        cell = (m["granularity"], m["target"])
        own = (m["method"], *cell)
        m["achieved"] = (achieved or {}).get(own, m["target"] + 0.001) if sparse else 0.0
        m["cost"] = _cost(m, (costs or {}).get(own))
        seed_shift = 0.005 * m["seed"]
        clean_cost = clean_penalty.get(own, clean_penalty.get(cell)) if sparse else 0.0
        # a dense variant (extra_dense) may be given a penalty keyed (method, "dense", 0.0)
        robust_cost = robust_penalty.get(own, robust_penalty.get(cell)) if sparse else robust_penalty.get(own, 0.0)
        specs = [("clean", "clean", np.nan, 0.0, "0", DENSE_CLEAN - clean_cost, np.nan)]
        for attack, levels in attacks.items():
            steps = 1 if attack == "fgsm" else 10
            for n255, dense_acc in levels.items():
                label = f"{n255}/255"
                key = f"{attack}:eps={label},steps={steps},restarts=1,seed=0"
                acc = dense_acc - robust_cost - seed_shift
                specs.append((key, attack, "Linf", n255 / 255, label, acc, steps))
        if include_cw:
            # minimum-norm attacks have no budget: the attacks package writes eps=inf
            specs.append(("cw:c=1,steps=50,seed=0", "cw", "L2", np.inf, "inf", 0.02, 50))
        clean_correct = None
        for key, attack, norm, eps, label, acc, steps in specs:
            correct = _draw(difficulty, mrng, acc)
            if attack == "clean":
                clean_correct = correct
            k = int(correct.sum())
            low, high = _wilson(k, n_examples)
            n_cc = int(clean_correct.sum())
            fooled = int(((clean_correct == 1) & (correct == 0)).sum())
            l2 = 0.8 + (0.3 * m["target"] if attack == "cw" else 0.0)
            rows.append(
                dict(
                    model_id=m["model_id"],
                    arch="smallcnn",
                    dataset="digits",
                    method=m["method"],
                    granularity=m["granularity"],
                    target_sparsity=m["target"],
                    achieved_sparsity=m["achieved"],
                    seed=m["seed"],
                    key=key,
                    attack=attack,
                    norm=norm,
                    eps=0.0 if attack == "clean" else eps,
                    eps_label=label,
                    eps_kind="clean" if attack == "clean" else "minimum_norm" if attack in MIN_NORM else "bounded",
                    steps=steps,
                    restarts=np.nan if attack == "clean" else 1,
                    n_examples=n_examples,
                    n_correct=k,
                    accuracy=k / n_examples,
                    ci_low=low,
                    ci_high=high,
                    n_clean_correct=n_cc,
                    attack_success_rate=np.nan if attack == "clean" else fooled / n_cc,
                    linf_max=np.nan if attack == "clean" else (eps if np.isfinite(eps) else 0.3),
                    l2_mean=np.nan if attack == "clean" else l2,
                    l2_median=np.nan if attack == "clean" else l2,
                    elapsed_s=0.5,
                    config_digest="abc123",
                    batch_size=256,
                    **(m["cost"] if cost_columns else {}),
                )
            )
            outcome_frames.append(
                pd.DataFrame(
                    {
                        "model_id": m["model_id"],
                        "key": key,
                        "example": np.arange(n_examples),
                        "correct": correct,
                        "perturbation_norm": np.where(
                            (clean_correct == 1) & (correct == 0) & (attack != "clean"), l2, np.nan
                        ),
                    }
                )
            )
        _write_model(root, m, rows)

    written = [*RESULT_COLUMNS, *(MODEL_COST_COLUMNS if cost_columns else [])]
    pd.DataFrame(rows)[written].to_csv(root / "results.csv", index=False)
    pd.concat(outcome_frames).to_csv(root / "outcomes.csv.gz", index=False)
    sanity = []
    for m in models:
        sanity.append(
            dict(
                model_id=m["model_id"],
                check="masked_weights_zero",
                status="passed",
                evidence="0 non-zero masked weights",
            )
        )
        sanity.append(
            dict(
                model_id=m["model_id"],
                check="robust_le_clean",
                status="passed",
                evidence="robust <= clean at every eps",
            )
        )
    if failing_check:
        sanity.append(
            dict(
                model_id=models[-1]["model_id"],
                check="gradient_masking",
                status="failed",
                evidence="square beats pgd by 12 points",
            )
        )
    if not_run_check:
        for m in models:
            sanity.append(
                dict(model_id=m["model_id"], check="eps0_equals_clean", status="not_run", evidence="no eps-0 row")
            )
    pd.DataFrame(sanity).to_csv(root / "sanity.csv", index=False)
    (root / "config.yaml").write_text(
        f"name: synthetic\nseeds: [0, 1]\ndata: {{dataset: digits, eval_examples: {n_examples}}}\n"
        "model: {arch: smallcnn}\n"
    )
    return root


#: The dense model's parameters and MACs in the synthetic runs.
DENSE_PARAMS, DENSE_MACS = 10000, 1_000_000


def _cost(m: dict, own: tuple[float, float] | None) -> dict[str, int]:
    """The model's MODEL_COST_COLUMNS: from its sparsity, or from `own` (MACs, params fractions) as a low-rank model."""
    if own is None:
        kept = 1.0 - 0.9 * m["achieved"]  # achieved sparsity over all weights is 0.9 x the prunable one
        return dict(
            params=DENSE_PARAMS,
            nonzero_params=round(DENSE_PARAMS * kept),
            dense_macs=DENSE_MACS,
            effective_macs=round(DENSE_MACS * kept),
        )
    macs, params = own
    # a smaller network: every weight of it is non-zero, and its "dense" count is its own
    return dict(
        params=round(DENSE_PARAMS * params),
        nonzero_params=round(DENSE_PARAMS * params),
        dense_macs=round(DENSE_MACS * macs),
        effective_macs=round(DENSE_MACS * macs),
    )


def _write_model(root: Path, m: dict, rows: list[dict]) -> None:
    folder = root / "models" / m["model_id"]
    folder.mkdir(parents=True, exist_ok=True)
    t = m["target"]
    sparse = m["granularity"] != "dense"
    clean_acc = next(r["accuracy"] for r in rows if r["model_id"] == m["model_id"] and r["attack"] == "clean")
    achieved_all = 0.9 * m["achieved"]
    meta = dict(
        model_id=m["model_id"],
        arch="smallcnn",
        dataset="digits",
        method=m["method"],
        granularity=m["granularity"],
        target_sparsity=t,
        achieved_sparsity=m["achieved"],
        achieved_sparsity_all=achieved_all,
        seed=m["seed"],
        epochs=3,
        clean_acc=clean_acc,
        parent=f"dense-s{m['seed']}" if sparse else None,
        config_digest="abc123",
        versions={"torch": "2.14.1", "torchvision": "0.29.1"},
        created_at="2025-01-01T00:00:00",
        compression=1.0 / (1.0 - achieved_all),
        **m["cost"],
    )
    (folder / "meta.json").write_text(json.dumps(meta))
    layers = [
        ("conv1", "conv", "16x1x3x3", 144, 0.0),
        ("conv2", "conv", "32x16x3x3", 4608, max(t - 0.05, 0.0)),
        ("conv3", "conv", "64x32x3x3", 18432, min(t + 0.05, 1.0) if sparse else 0.0),
        ("fc", "linear", "10x256", 2560, 0.0),
    ]
    rows = [
        dict(
            name=n,
            kind=k,
            shape=s,
            granularity=m["granularity"] if sparse and sp > 0 else "dense",
            prunable=n in {"conv2", "conv3"},
            weights=w,
            nonzeros=round(w * (1 - sp)),
            sparsity=sp,
            structure_ok=True,
            why="",
        )
        for n, k, s, w, sp in layers
    ]
    # the two totals the trainer writes last (as accounting.layer_sparsity_table does)
    for name, chosen in (("__prunable__", [r for r in rows if r["prunable"]]), ("__all__", rows)):
        w, nz = sum(r["weights"] for r in chosen), sum(r["nonzeros"] for r in chosen)
        rows.append(
            dict(
                name=name,
                kind="total",
                shape="",
                granularity=m["granularity"],
                prunable=name == "__prunable__",
                weights=w,
                nonzeros=nz,
                sparsity=1 - nz / w,
                structure_ok=True,
                why="",
            )
        )
    pd.DataFrame(rows).to_csv(folder / "layer_sparsity.csv", index=False)


@pytest.fixture
def synthetic_run(tmp_path: Path) -> Path:
    """The default synthetic run: dense + window/filter x 50%/70% x 2 seeds, FGSM and PGD at 3 eps."""
    return make_run(tmp_path / "run")


@pytest.fixture(scope="session")
def shared_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default synthetic run, written once per session for read-only tests."""
    return make_run(tmp_path_factory.mktemp("shared") / "run")


@pytest.fixture
def run_factory(tmp_path: Path):
    """A function that writes a synthetic run with `make_run`'s keyword arguments, in its own folder."""
    counter = iter(range(1_000))

    def factory(**kwargs) -> Path:
        return make_run(tmp_path / f"run{next(counter)}", **kwargs)

    return factory


#: The robust-accuracy penalty of `methods_run`: campfire most robust at 50%, snip at 70%, random least at both.
METHOD_PENALTY = {
    ("campfire", "window", 0.5): 0.00,
    ("campfire", "window", 0.7): 0.03,
    ("random", "window", 0.5): 0.08,
    ("random", "window", 0.7): 0.20,
    ("snip", "window", 0.5): 0.02,
    ("snip", "window", 0.7): 0.00,
}


@pytest.fixture(scope="session")
def methods_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three methods (campfire, random, snip) at window x 50%/70%, one seed; snip at 70% reaches only 66.7%."""
    return make_run(
        tmp_path_factory.mktemp("methods") / "run",
        granularities=("window",),
        methods=("campfire", "random", "snip"),
        seeds=(0,),
        robust_penalty=METHOD_PENALTY,
        clean_penalty=dict.fromkeys(METHOD_PENALTY, 0.01),
        achieved={("snip", "window", 0.7): 0.667},
    )
