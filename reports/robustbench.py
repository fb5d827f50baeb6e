"""Results in RobustBench's per-model format: one JSON per evaluated model.

RobustBench's `model_info/<dataset>/<threat>/<name>.json` holds the headline numbers of one model
as text percentages with two decimals (`"clean_acc": "88.98"`, `"autoattack_acc": "57.14"`, `"eps":
"8/255"`), beside `name`, `architecture`, `dataset`, `additional_data`, `number_forward_passes`
and the paper fields (`link`, `authors`, `venue`, `reported`), which are empty here: our
models come from a run, not a paper. We add what makes the numbers reproducible and what this
project is about: the threat model, examples, seed, data label, library versions and the
sparsity fields (method, granularity, target and achieved sparsity).

`autoattack_acc` is filled only from a real AutoAttack evaluation (the `autoattack` attack) at the
chosen eps and norm; a model without one gets `null` and says so in `autoattack_note`, never
another attack's number under that name.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from reports.atomic import write_json_atomic

__all__ = ["AUTOATTACK", "ROBUSTBENCH_DIR", "robustbench_entries", "write_robustbench"]

AUTOATTACK = "autoattack"
#: the report's folder of per-model records (report/robustbench/<model_id>.json)
ROBUSTBENCH_DIR = "robustbench"
_NORM_NAMES = {"Linf": "Linf", "L2": "L2", "linf": "Linf", "l2": "L2"}


def _pct(value: float | None) -> str | None:
    return None if value is None or pd.isna(value) else f"{100.0 * float(value):.2f}"


def _headline_eps(rows: pd.DataFrame) -> tuple[str, str] | None:
    """(eps_label, norm) of the largest-eps AutoAttack rows, or None when AutoAttack never ran."""
    aa = rows[(rows["attack"] == AUTOATTACK) & (rows["eps_kind"] == "bounded") & (rows["eps"] > 0)]
    if aa.empty:
        return None
    top = aa.sort_values("eps", kind="stable").iloc[-1]
    return str(top["eps_label"]), str(top["norm"])


def robustbench_entries(
    results: pd.DataFrame, meta: pd.DataFrame | None = None, *, data_label: str | None = None
) -> dict[str, dict[str, Any]]:
    """One RobustBench-style record per model of `results` (the tidy results table).

    Args:
        results: rows with the columns of `contract.RESULTS`.
        meta: `load.load_meta`'s table (flattened meta.json), for library versions and the data's
            label; None leaves those out.
        data_label: the dataset name to write (default: the results' `dataset`).

    Returns:
        `{model_id: record}`; AutoAttack at its largest eps is the headline when it ran.
    """
    entries: dict[str, dict[str, Any]] = {}
    metas: Mapping[str, Mapping[str, Any]] = (
        {str(r["model_id"]): r for r in meta.to_dict("records")} if meta is not None and not meta.empty else {}
    )
    for model_id, rows in results.groupby("model_id", sort=True):
        first = rows.iloc[0]
        clean = rows[rows["attack"] == "clean"]
        headline = _headline_eps(rows)
        record: dict[str, Any] = {
            "link": "",
            "name": str(model_id),
            "authors": "",
            "additional_data": False,
            "number_forward_passes": 1,
            "dataset": data_label or str(first["dataset"]),
            "venue": "",
            "architecture": str(first["arch"]),
            "eps": headline[0] if headline else None,
            "clean_acc": _pct(clean["accuracy"].iloc[0]) if not clean.empty else None,
            "reported": "",
            "autoattack_acc": None,
        }
        if headline is not None:
            eps_label, norm = headline
            aa = rows[(rows["attack"] == AUTOATTACK) & (rows["eps_label"] == eps_label) & (rows["norm"] == norm)]
            row = aa.iloc[0]
            record["autoattack_acc"] = _pct(row["accuracy"])
            record["threat_model"] = _NORM_NAMES.get(norm, norm)
            record["n_examples"] = int(row["n_examples"])
            record["autoattack_ci95"] = [_pct(row["ci_low"]), _pct(row["ci_high"])]
        else:
            record["autoattack_note"] = "AutoAttack was not run on this model; autoattack_acc is left empty"
            record["n_examples"] = int(clean["n_examples"].iloc[0]) if not clean.empty else None
        info = metas.get(str(model_id), {})
        record.update(
            {
                "seed": int(first["seed"]),
                "method": str(first["method"]),
                "granularity": str(first["granularity"]),
                "target_sparsity": float(first["target_sparsity"]),
                "achieved_sparsity": float(first["achieved_sparsity"]),
                "versions": {
                    k.split(".", 1)[1]: v for k, v in info.items() if k.startswith("versions.") and pd.notna(v)
                },
            }
        )
        entries[str(model_id)] = record
    return entries


def write_robustbench(entries: Mapping[str, Mapping[str, Any]], folder: str | Path) -> list[Path]:
    """Write each record as `<folder>/<model_id>.json` (atomically); returns the paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return [write_json_atomic(folder / f"{model_id}.json", dict(record)) for model_id, record in entries.items()]
