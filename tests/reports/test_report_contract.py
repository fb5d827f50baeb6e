"""The run folder's contract: one place names every file and column, and reading and writing follow it."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from reports import ReportError, contract
from reports.contract import OUTCOMES, RESULTS, SANITY, cast_for_writing, validate_table

ROOT = Path(__file__).resolve().parents[2]
FILE_NAMES = [
    contract.CONFIG_FILE,
    contract.RESULTS_FILE,
    contract.OUTCOMES_FILE,
    contract.SANITY_FILE,
    contract.CHECKPOINT_FILE,
    contract.META_FILE,
    contract.TRAIN_LOG_FILE,
    contract.LAYER_SPARSITY_FILE,
]


def test_no_module_spells_a_run_folder_file_name_but_the_contract():
    pattern = re.compile("|".join(re.escape(f'"{name}"') for name in FILE_NAMES))
    offenders = []
    for package in ("robustsparse", "reports", "attacks"):
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel == "reports/contract.py":
                continue
            offenders += [f"{rel}: {m.group(0)}" for m in pattern.finditer(path.read_text(encoding="utf-8"))]
    assert offenders == []


def test_column_lists_are_derived_from_the_tables():
    assert [c for c in RESULTS.columns if c not in RESULTS.optional] == contract.RESULT_COLUMNS
    assert list(OUTCOMES.columns) == contract.OUTCOME_COLUMNS
    assert list(SANITY.columns) == contract.SANITY_COLUMNS
    assert RESULTS.vocabularies["eps_kind"] == contract.EPS_KINDS
    assert SANITY.vocabularies["status"] == contract.SANITY_STATUSES


def _sanity(**changes) -> pd.DataFrame:
    row = {"model_id": "m", "check": "c", "status": "passed", "evidence": "e"} | changes
    return pd.DataFrame([row])


def test_reading_refuses_what_the_contract_does_not_allow():
    with pytest.raises(ReportError, match=r"status.*allowed values: \['passed', 'failed', 'not_run'\]"):
        validate_table(_sanity(status="ok"), SANITY)
    with pytest.raises(ReportError, match="lacks column"):
        validate_table(_sanity().drop(columns="status"), SANITY)
    outcomes = pd.DataFrame(
        {
            "model_id": ["m", "m"],
            "key": ["k", "k"],
            "example": [0, 0],
            "correct": [1, 0],
            "perturbation_norm": [None, 0.1],
        }
    )
    with pytest.raises(ReportError, match="repeats"):
        validate_table(outcomes, OUTCOMES)
    with pytest.raises(ReportError, match="whole number"):
        validate_table(outcomes.assign(example=[0.5, 1]), OUTCOMES)
    with pytest.raises(ReportError, match="true/false"):
        validate_table(outcomes.assign(example=[0, 1], correct=["yes", "maybe"]), OUTCOMES)


def test_reading_types_every_column_and_fills_optional_ones():
    typed = validate_table(
        pd.DataFrame({"model_id": [1], "check": ["c"], "status": ["not_run"], "evidence": [np.nan]}), SANITY
    )
    assert typed.loc[0, "model_id"] == "1" and typed.loc[0, "evidence"] == ""
    outcomes = validate_table(
        pd.DataFrame(
            {"model_id": ["m"], "key": ["k"], "example": ["3"], "correct": ["True"], "perturbation_norm": ["0.25"]}
        ),
        OUTCOMES,
    )
    assert outcomes.loc[0, "example"] == 3 and outcomes["correct"].dtype == bool and outcomes.loc[0, "correct"]
    assert outcomes.loc[0, "perturbation_norm"] == 0.25


def test_writing_orders_columns_and_keeps_integers_whole():
    row = {c: 1.0 for c, kind in RESULTS.columns.items() if kind in ("int", "float")}
    row |= {c: "x" for c, kind in RESULTS.columns.items() if kind == "str" and c != "variant"}
    frame = pd.DataFrame([row, {**row, "steps": np.nan}]).iloc[:, ::-1]  # columns reversed, one empty int
    out = cast_for_writing(frame, RESULTS)
    assert list(out.columns) == list(RESULTS.columns)
    assert out["steps"].dtype == "Int64" and out["n_correct"].tolist() == [1, 1]
    assert out.to_csv(index=False).splitlines()[2].split(",")[list(RESULTS.columns).index("steps")] == ""
    assert out["variant"].tolist() == ["", ""]  # optional, filled
    with pytest.raises(KeyError, match="eps_kind"):
        cast_for_writing(frame.drop(columns="eps_kind"), RESULTS)


def test_the_attacks_package_writes_the_contracts_vocabularies():
    # attacks writes eps_kind and the sanity status without importing reports (it stands alone);
    # the two spellings of each vocabulary must stay one
    from attacks.sanity import STATUSES
    from attacks.spec import EPS_KINDS

    assert EPS_KINDS == contract.EPS_KINDS
    assert STATUSES == contract.SANITY_STATUSES
