"""RobustBench-style JSON: the headline is AutoAttack at its largest eps, and only AutoAttack."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from reports import build_report
from reports.errors import ReportError
from reports.load import load_results
from reports.robustbench import robustbench_entries, write_robustbench


def _row(model_id, attack, eps, label, accuracy, kind="bounded", norm="Linf"):
    return {
        "model_id": model_id,
        "arch": "resnet20",
        "dataset": "cifar10",
        "method": "campfire",
        "granularity": "element",
        "target_sparsity": 0.7,
        "achieved_sparsity": 0.7001,
        "seed": 0,
        "attack": attack,
        "eps": eps,
        "eps_label": label,
        "eps_kind": kind,
        "norm": norm,
        "n_examples": 1000,
        "accuracy": accuracy,
        "ci_low": accuracy - 0.03,
        "ci_high": accuracy + 0.03,
    }


RESULTS = pd.DataFrame(
    [
        _row("a", "clean", 0.0, "0", 0.9123, kind="clean", norm="none"),
        _row("a", "autoattack", 4 / 255, "4/255", 0.40),
        _row("a", "autoattack", 8 / 255, "8/255", 0.1234),
        _row("a", "pgd", 16 / 255, "16/255", 0.01),
        _row("b", "clean", 0.0, "0", 0.88, kind="clean", norm="none"),
        _row("b", "pgd", 8 / 255, "8/255", 0.05),
    ]
)


def test_the_headline_is_autoattack_at_its_largest_eps_in_robustbench_text_percentages():
    entries = robustbench_entries(RESULTS, data_label="CIFAR-10 (JPEG)")
    a = entries["a"]
    assert a["clean_acc"] == "91.23" and a["autoattack_acc"] == "12.34" and a["eps"] == "8/255"
    assert a["threat_model"] == "Linf" and a["n_examples"] == 1000 and a["dataset"] == "CIFAR-10 (JPEG)"
    assert a["autoattack_ci95"] == ["9.34", "15.34"]
    assert (a["method"], a["granularity"], a["achieved_sparsity"]) == ("campfire", "element", 0.7001)
    for key in ("link", "name", "authors", "additional_data", "number_forward_passes", "architecture", "reported"):
        assert key in a


def test_a_model_without_autoattack_gets_no_number_under_that_name():
    b = robustbench_entries(RESULTS)["b"]
    assert b["autoattack_acc"] is None and b["eps"] is None  # PGD's 5% is not passed off as AutoAttack
    assert "not run" in b["autoattack_note"] and b["clean_acc"] == "88.00"


def test_versions_come_from_the_metadata_and_files_are_one_per_model(tmp_path):
    meta = pd.DataFrame([{"model_id": "a", "versions.torch": "2.14.1", "versions.robustsparse": "0.1.0"}])
    entries = robustbench_entries(RESULTS, meta)
    assert entries["a"]["versions"] == {"torch": "2.14.1", "robustsparse": "0.1.0"} and entries["b"]["versions"] == {}
    paths = write_robustbench(entries, tmp_path / "rb")
    assert sorted(p.name for p in paths) == ["a.json", "b.json"]
    assert json.loads((tmp_path / "rb" / "a.json").read_text())["autoattack_acc"] == "12.34"


def test_the_report_writes_one_record_per_model_with_the_results_clean_accuracy(synthetic_run):
    index = build_report(synthetic_run)
    records = {p.stem: json.loads(p.read_text()) for p in (index.parent / "robustbench").glob("*.json")}
    results = load_results(synthetic_run)
    clean = results[results["attack"] == "clean"].set_index("model_id")["accuracy"]
    assert set(records) == set(clean.index) and len(records) > 1
    for model_id, record in records.items():
        assert record["clean_acc"] == f"{100 * clean[model_id]:.2f}"


def test_the_results_table_as_parquet_equals_the_csv(synthetic_run):
    pytest.importorskip("pyarrow")
    index = build_report(synthetic_run, parquet=True)
    table = pd.read_parquet(index.parent / "results.parquet")
    pd.testing.assert_frame_equal(table, load_results(synthetic_run), check_dtype=False)


def test_parquet_without_pyarrow_is_refused_before_anything_is_written(synthetic_run, monkeypatch):
    import reports.build

    monkeypatch.setattr(reports.build, "PARQUET_ENGINE", "robustsparse_no_such_package")
    with pytest.raises(ReportError, match=r"pyarrow.*robustsparse\[parquet\]"):
        build_report(synthetic_run, parquet=True)
    assert not (synthetic_run / "report").exists()
