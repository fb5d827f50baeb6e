"""Reading a run directory: schema checks and clear errors on missing or malformed files."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from reports import RESULT_COLUMNS, ReportError, find_run_dir, load_results, validate_results
from reports.load import (
    DEFAULT_RUN_DIR,
    RUN_DIR_ENV,
    load_layer_sparsity,
    load_meta,
    load_outcomes,
    load_sanity,
    read_run_config_file,
)


def test_result_columns_are_unique_and_cover_the_contract() -> None:
    assert len(RESULT_COLUMNS) == len(set(RESULT_COLUMNS))
    for col in ["model_id", "key", "attack", "eps", "n_correct", "accuracy", "ci_low", "ci_high", "config_digest"]:
        assert col in RESULT_COLUMNS


def test_load_results_types_numbers_and_keeps_every_row(shared_run: Path) -> None:
    raw = pd.read_csv(shared_run / "results.csv")
    df = load_results(shared_run)
    assert len(df) == len(raw)
    assert df["eps"].dtype.kind == "f" and df["n_correct"].dtype.kind in "if"
    assert load_results(shared_run / "results.csv").equals(df)  # a file path works too


def test_missing_results_is_a_report_error(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="results"):
        load_results(tmp_path)


def test_missing_columns_are_named(shared_run: Path) -> None:
    df = pd.read_csv(shared_run / "results.csv").drop(columns=["ci_low", "key"])
    with pytest.raises(ReportError) as info:
        validate_results(df)
    assert "ci_low" in str(info.value) and "key" in str(info.value)


def test_text_in_numeric_column_is_refused(shared_run: Path) -> None:
    df = pd.read_csv(shared_run / "results.csv")
    df["accuracy"] = df["accuracy"].astype(object)
    df.loc[3, "accuracy"] = "high"
    with pytest.raises(ReportError, match="accuracy.*'high'"):
        validate_results(df)


def test_repeated_key_and_missing_clean_are_refused(shared_run: Path) -> None:
    df = pd.read_csv(shared_run / "results.csv")
    with pytest.raises(ReportError, match="repeats"):
        validate_results(pd.concat([df, df.iloc[[5]]]))
    with pytest.raises(ReportError, match="clean"):
        validate_results(df[df["attack"] != "clean"])


def test_malformed_results_file_is_a_report_error(tmp_path: Path) -> None:
    (tmp_path / "results.csv").write_bytes(b"")
    with pytest.raises(ReportError, match="cannot be read"):
        load_results(tmp_path)


def test_outcomes_match_results_counts(shared_run: Path) -> None:
    results, outcomes = load_results(shared_run), load_outcomes(shared_run)
    sums = outcomes.groupby(["model_id", "key"])["correct"].sum()
    merged = results.set_index(["model_id", "key"])["n_correct"]
    assert (sums.reindex(merged.index) == merged).all()


def test_bad_outcome_values_are_refused(tmp_path: Path) -> None:
    pd.DataFrame(
        {"model_id": ["a"], "key": ["clean"], "example": [0], "correct": [2], "perturbation_norm": [""]}
    ).to_csv(tmp_path / "outcomes.csv.gz", index=False)
    with pytest.raises(ReportError, match="0/1"):
        load_outcomes(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert load_outcomes(empty, missing_ok=True) is None
    with pytest.raises(ReportError, match="outcomes"):
        load_outcomes(empty)


def test_meta_one_row_per_model_with_flattened_versions(shared_run: Path) -> None:
    meta = load_meta(shared_run)
    assert meta["model_id"].is_unique
    assert set(meta["model_id"]) == set(load_results(shared_run)["model_id"])
    assert (meta["versions.torch"] == "2.14.1").all()


def test_meta_in_the_wrong_folder_is_refused(synthetic_run: Path) -> None:
    path = synthetic_run / "models" / "dense-s0" / "meta.json"
    data = json.loads(path.read_text())
    data["model_id"] = "someone-else"
    path.write_text(json.dumps(data))
    with pytest.raises(ReportError, match="someone-else"):
        load_meta(synthetic_run)


def test_invalid_meta_json_is_a_report_error(synthetic_run: Path) -> None:
    (synthetic_run / "models" / "dense-s0" / "meta.json").write_text("{not json")
    with pytest.raises(ReportError, match="not valid JSON"):
        load_meta(synthetic_run)


def test_layer_sparsity_concatenates_every_model(shared_run: Path) -> None:
    layers = load_layer_sparsity(shared_run)
    n_models = len(list((shared_run / "models").iterdir()))
    assert layers["model_id"].nunique() == n_models
    assert layers.groupby("model_id")["layer_index"].apply(lambda s: list(s) == list(range(len(s)))).all()


def test_sanity_and_config(shared_run: Path, tmp_path: Path) -> None:
    sanity = load_sanity(shared_run)
    assert set(sanity["status"]) <= {"passed", "failed", "not_run"}
    config = read_run_config_file(shared_run)
    assert config.settings["name"] == "synthetic" and "name: synthetic" in config.text
    (tmp_path / "config.yaml").write_text("- a list\n- not a mapping\n")
    with pytest.raises(ReportError, match="mapping"):
        read_run_config_file(tmp_path)
    assert load_sanity(tmp_path, missing_ok=True) is None


# ---------------------------------------------------------------- find_run_dir


def _fake_run(folder: Path) -> Path:
    """A folder that find_run_dir accepts: it only looks for results.csv."""
    folder.mkdir(parents=True)
    (folder / "results.csv").write_text("model_id\n")
    return folder


def test_find_run_dir_tries_each_root_in_order(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    notebooks = repo / "notebooks"
    notebooks.mkdir(parents=True)
    in_repo = _fake_run(repo / "runs" / "a")
    assert find_run_dir("runs/a", roots=[notebooks, repo]) == in_repo.resolve()
    in_notebooks = _fake_run(notebooks / "runs" / "a")  # now both hold it: the first root wins
    assert find_run_dir("runs/a", roots=[notebooks, repo]) == in_notebooks.resolve()
    assert find_run_dir(Path("runs/a"), roots=[repo, notebooks]) == in_repo.resolve()
    # an absolute path is taken as it is, whatever the roots
    assert find_run_dir(str(in_repo), roots=[notebooks]) == in_repo.resolve()


def test_find_run_dir_looks_in_cwd_then_its_parent_by_default(tmp_path: Path, monkeypatch) -> None:
    repo = tmp_path / "repo"
    (repo / "notebooks").mkdir(parents=True)
    run = _fake_run(repo / "runs" / "tiny")
    monkeypatch.chdir(repo / "notebooks")  # as when Jupyter opens a notebook from notebooks/
    found = find_run_dir("runs/tiny")
    assert found == run.resolve() and found.is_absolute()


def test_find_run_dir_without_a_path_reads_the_environment_then_the_default(tmp_path: Path, monkeypatch) -> None:
    named = _fake_run(tmp_path / "named")
    monkeypatch.setenv(RUN_DIR_ENV, str(named))
    assert find_run_dir() == named.resolve()
    monkeypatch.delenv(RUN_DIR_ENV)
    default = _fake_run(tmp_path / DEFAULT_RUN_DIR)
    assert find_run_dir(roots=[tmp_path]) == default.resolve()


def test_find_run_dir_names_the_places_it_tried(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()  # a folder without results.csv is not a finished run
    with pytest.raises(ReportError) as info:
        find_run_dir("empty", roots=[tmp_path, tmp_path / "other"])
    message = str(info.value)
    assert "'empty'" in message
    assert str(tmp_path / "empty") in message and str(tmp_path / "other" / "empty") in message
    assert RUN_DIR_ENV in message


def test_sanity_status_outside_the_vocabulary_is_refused(synthetic_run: Path) -> None:
    path = synthetic_run / "sanity.csv"
    table = pd.read_csv(path)
    table.loc[0, "status"] = "True"  # the old boolean column's value
    table.to_csv(path, index=False)
    with pytest.raises(ReportError, match="status.*allowed values"):
        load_sanity(synthetic_run)


def test_results_without_eps_kind_are_refused(synthetic_run: Path) -> None:
    table = pd.read_csv(synthetic_run / "results.csv").drop(columns="eps_kind")
    with pytest.raises(ReportError, match="eps_kind"):
        validate_results(table)
