"""The notebooks in notebooks/: committed clean, read-only over a run, and executed end to end with nbclient.

Each notebook runs in a fresh `python3` kernel against the session's finished tiny run (dense +
campfire element & filter at 50%, FGSM at 2 eps + PGD at 1 eps) and against a stripped copy of it (no
per-example outcomes, no sanity table, no model folders, one eps per attack). A probe cell appended
to the executed copy reports the notebook's own numbers, which are checked against the run's files
read here with pandas and scipy only.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from nbformat.v4 import new_code_cell
from scipy import stats

NOTEBOOKS_DIR = Path(__file__).resolve().parents[2] / "notebooks"
EXPLORE = NOTEBOOKS_DIR / "01_explore_run.ipynb"
GRANULARITIES = NOTEBOOKS_DIR / "02_granularities_at_equal_sparsity.ipynb"
NOTEBOOKS = [EXPLORE, GRANULARITIES]

# the notebooks may read and plot; anything that trains, attacks or loads models is out of place there
ALLOWED_IMPORTS = {"os", "json", "pathlib", "numpy", "pandas", "seaborn", "matplotlib", "IPython", "reports"}
FORBIDDEN_CALLS = [
    "train_job",
    "run_experiment",
    "evaluate(",
    "torchattacks",
    "robustsparse",
    "torch.",
    "build_report(",
]

PROBE_PREFIX = "PROBE "
PROBE_EXPLORE = (
    "import json\n"
    f"print({PROBE_PREFIX!r} + json.dumps({{'comparison': comparison, 'eps': EPS, 'run_dir': str(RUN_DIR)}}))"
)
PROBE_GRANULARITIES = (
    "import json\n"
    f"print({PROBE_PREFIX!r} + json.dumps({{\n"
    "    'target': target, 'eps': EPS, 'run_dir': str(RUN_DIR),\n"
    "    'robust': tradeoff['robust_accuracy'].to_dict() if len(tradeoff) else {},\n"
    "    'clean': tradeoff['clean_accuracy'].to_dict() if len(tradeoff) else {},\n"
    "    'method_ranks': method_table.loc[method_table['is_headline'], ['label', 'rank']].values.tolist()\n"
    "    if len(method_table) else [],\n"
    "    'method_series': method_table.loc[method_table['is_headline'], 'series'].iloc[0] if len(method_table) else None,\n"
    "}))"
)

TIMEOUT_S = 120


def _code_cells(nb: nbformat.NotebookNode) -> list[str]:
    return [cell.source for cell in nb.cells if cell.cell_type == "code"]


def _python_source(source: str) -> str:
    """A code cell without its IPython magics, so that `ast` can parse it."""
    return "\n".join("" if line.lstrip().startswith("%") else line for line in source.splitlines())


def _texts(cell: nbformat.NotebookNode) -> str:
    """Everything a cell printed or displayed as text."""
    parts = []
    for out in cell.get("outputs", []):
        if out.output_type == "stream":
            parts.append(out.text)
        elif "data" in out:
            parts.append(out.data.get("text/plain", ""))
    return "".join(parts)


def _execute(
    path: Path, run_dir: str | Path, cwd: Path, monkeypatch: pytest.MonkeyPatch, probe: str | None = None
) -> nbformat.NotebookNode:
    """Run a notebook in a fresh python3 kernel whose environment names `run_dir`; return the executed copy."""
    nb = nbformat.read(path, as_version=4)
    if probe is not None:
        nb.cells.append(new_code_cell(probe))
    # the kernel inherits this process's environment at start-up; monkeypatch restores it afterwards
    monkeypatch.setenv("ROBUSTSPARSE_RUN_DIR", str(run_dir))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    client = NotebookClient(nb, timeout=TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(cwd)}})
    client.execute()
    return nb


def _probe(nb: nbformat.NotebookNode) -> dict:
    lines = [line for line in _texts(nb.cells[-1]).splitlines() if line.startswith(PROBE_PREFIX)]
    assert len(lines) == 1, f"probe printed {_texts(nb.cells[-1])!r}"
    return json.loads(lines[0][len(PROBE_PREFIX) :])


def _last_code_output(nb: nbformat.NotebookNode, skip_probe: bool = True) -> str:
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    return _texts(code[-2] if skip_probe else code[-1])


def _n_images(nb: nbformat.NotebookNode) -> int:
    return sum("image/png" in out.get("data", {}) for cell in nb.cells for out in cell.get("outputs", []))


def _headline_eps(results: pd.DataFrame) -> float:
    """The eps shared by the most attacks (ties: the larger), computed here without `reports`."""
    bounded = results[(results["attack"] != "clean") & (results["eps"] > 0)]
    counts = bounded.groupby("eps")["attack"].nunique()
    return float(counts[counts == counts.max()].index.max())


@pytest.fixture(scope="module")
def stripped_run(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny run with only results.csv and config.yaml, and one eps per attack (the largest)."""
    run_dir = tmp_path_factory.mktemp("stripped") / "run"
    run_dir.mkdir()
    shutil.copy2(tiny_run / "config.yaml", run_dir / "config.yaml")
    results = pd.read_csv(tiny_run / "results.csv")
    largest = results[results["attack"] != "clean"].groupby("attack")["eps"].transform("max")
    keep = (results["attack"] == "clean") | (results["eps"] == largest.reindex(results.index))
    results[keep].to_csv(run_dir / "results.csv", index=False)
    return run_dir


# ---------------------------------------------------------------- the committed files


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_is_valid_clean_and_names_its_run_dir(path: Path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name}: a code cell has outputs; clear them before committing"
            assert cell.execution_count is None, f"{path.name}: a code cell keeps an execution count"
    first = nb.cells[0]
    assert first.cell_type == "markdown"
    assert "ROBUSTSPARSE_RUN_DIR" in first.source and "runs/digits-quick" in first.source
    assert 'os.environ.get("ROBUSTSPARSE_RUN_DIR", "runs/digits-quick")' in _code_cells(nb)[0]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_only_reads_and_plots(path: Path):
    nb = nbformat.read(path, as_version=4)
    for source in _code_cells(nb):
        for word in FORBIDDEN_CALLS:
            assert word not in source, f"{path.name} calls {word!r}; notebooks must not train, attack or load models"
        tree = ast.parse(_python_source(source))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in ALLOWED_IMPORTS, f"{path.name} imports {name!r}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_imports_only_the_public_reports_api(path: Path):
    import reports

    nb = nbformat.read(path, as_version=4)
    for source in _code_cells(nb):
        for node in ast.walk(ast.parse(_python_source(source))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "reports":
                assert node.module == "reports", f"{path.name} imports reports internals ({node.module})"
                private = [a.name for a in node.names if a.name not in reports.__all__]
                assert not private, f"{path.name} imports {private}, which reports does not export"
            if isinstance(node, ast.FunctionDef):  # helpers belong in the reports API, not copied per notebook
                pytest.fail(f"{path.name} defines {node.name}(); move it into reports and import it")


# ---------------------------------------------------------------- executed against a finished run


def test_explore_notebook_compares_two_models_as_the_files_say(tiny_run: Path, tmp_path: Path, monkeypatch):
    nb = _execute(EXPLORE, tiny_run, tmp_path, monkeypatch, probe=PROBE_EXPLORE)
    results = pd.read_csv(tiny_run / "results.csv")
    outcomes = pd.read_csv(tiny_run / "outcomes.csv.gz")

    summary = _last_code_output(nb)
    for model_id in results["model_id"].unique():
        assert model_id in summary, f"the summary cell does not name {model_id}:\n{summary}"
    everything = "".join(_texts(cell) for cell in nb.cells)
    assert "nothing to draw" not in everything  # the tiny run holds every piece each figure needs
    assert _n_images(nb) >= 5

    probe = _probe(nb)
    assert probe["eps"] == pytest.approx(_headline_eps(results))
    cmp_ = probe["comparison"]
    assert cmp_ is not None
    dense = set(results.loc[results["method"] == "dense", "model_id"])
    assert cmp_["model_a"] in dense and cmp_["model_b"] not in dense
    # the 2x2 table and McNemar's p from the per-example outcomes, recomputed here
    pair = outcomes[outcomes["key"] == cmp_["key"]].pivot(index="example", columns="model_id", values="correct")
    a, b = pair[cmp_["model_a"]].astype(bool), pair[cmp_["model_b"]].astype(bool)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    assert (cmp_["only_a"], cmp_["only_b"], cmp_["n_examples"]) == (only_a, only_b, len(pair))
    assert cmp_["p_value"] == pytest.approx(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue)
    # and the accuracies it reports are those of results.csv
    rows = results[results["key"] == cmp_["key"]].set_index("model_id")["accuracy"]
    assert cmp_["accuracy_a"] == pytest.approx(rows[cmp_["model_a"]])
    assert cmp_["accuracy_b"] == pytest.approx(rows[cmp_["model_b"]])


def test_granularity_notebook_ranks_the_granularities_as_the_files_say(tiny_run: Path, tmp_path: Path, monkeypatch):
    # opened from notebooks/ with the run given relative to the repository root, as `make run` leaves it
    repo = tmp_path / "repo"
    (repo / "notebooks").mkdir(parents=True)
    shutil.copytree(tiny_run, repo / "runs" / "tiny")
    nb = _execute(GRANULARITIES, "runs/tiny", repo / "notebooks", monkeypatch, probe=PROBE_GRANULARITIES)
    results = pd.read_csv(tiny_run / "results.csv")

    everything = "".join(_texts(cell) for cell in nb.cells)
    assert "nothing to draw" not in everything
    assert _n_images(nb) >= 4  # accuracy vs eps, change vs dense against eps, heatmap, clean vs robust

    probe = _probe(nb)
    assert Path(probe["run_dir"]) == (repo / "runs" / "tiny").resolve()
    sparse = results[results["granularity"] != "dense"]  # not the dense model nor its continued control
    assert probe["target"] == pytest.approx(sparse["target_sparsity"].max())
    eps = _headline_eps(results)
    assert probe["eps"] == pytest.approx(eps)
    # robust accuracy: the worst attack at the headline eps, per model (one seed, so one model per label)
    at_eps = results[(results["attack"] != "clean") & (results["eps"] == eps)]
    label = results["granularity"].where(results["granularity"] != "dense", results["method"])  # dense-continued apart
    worst = at_eps.groupby(label[at_eps.index])["accuracy"].min()
    clean = results[results["attack"] == "clean"].groupby(label)["accuracy"].mean()
    assert probe["robust"] == pytest.approx(worst.to_dict())
    assert probe["clean"] == pytest.approx(clean.to_dict())

    # one method (campfire): the methods section says so and draws nothing
    assert probe["method_ranks"] == [] and "no methods to set side by side at this level (1 method" in everything

    summary = _last_code_output(nb)
    ranked = [m.group(1) for m in re.finditer(r"^\s*\d+\. (\S+)", summary, flags=re.MULTILINE)]
    assert ranked == list(worst.sort_values(ascending=False, kind="stable").index), summary
    assert set(ranked) == {"dense", "dense-continued", *sparse["granularity"].unique()}


@pytest.fixture(scope="module")
def methods_run(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny run whose filter model is relabelled as made by another method (`random`)."""
    run_dir = tmp_path_factory.mktemp("methods") / "run"
    shutil.copytree(tiny_run, run_dir, ignore=shutil.ignore_patterns("report"))
    results = pd.read_csv(run_dir / "results.csv")
    relabelled = results["granularity"] == "filter"
    results.loc[relabelled, "method"] = "random"
    results.to_csv(run_dir / "results.csv", index=False)
    for model_id in results.loc[relabelled, "model_id"].unique():
        meta_path = run_dir / "models" / model_id / "meta.json"
        meta = json.loads(meta_path.read_text())
        meta_path.write_text(json.dumps({**meta, "method": "random"}))
    return run_dir


def test_granularity_notebook_sets_methods_side_by_side(methods_run: Path, tmp_path: Path, monkeypatch):
    nb = _execute(GRANULARITIES, methods_run, tmp_path, monkeypatch, probe=PROBE_GRANULARITIES)
    results = pd.read_csv(methods_run / "results.csv")
    probe = _probe(nb)
    eps = _headline_eps(results)
    at_eps = results[(results["attack"] != "clean") & np.isclose(results["eps"], eps)]
    # the attack the comparison speaks of is the strongest against the dense models at that eps
    dense = at_eps[at_eps["granularity"] == "dense"].groupby("attack")["accuracy"].mean()
    assert probe["method_series"].lower() in set(dense[dense == dense.min()].index)
    # ranked by robust accuracy under it, highest first (ties: by name), as the files say
    sparse = at_eps[(at_eps["granularity"] != "dense") & (at_eps["attack"] == probe["method_series"].lower())]
    sparse = sparse.assign(label=sparse["method"] + "/" + sparse["granularity"])
    expected = sparse.sort_values(["accuracy", "label"], ascending=[False, True])["label"].tolist()
    assert [label for label, _ in sorted(probe["method_ranks"], key=lambda r: r[1])] == expected
    assert expected == ["campfire/element", "random/filter"] or expected == ["random/filter", "campfire/element"]
    everything = "".join(_texts(cell) for cell in nb.cells)
    assert "nothing to draw" not in everything and "no methods to set side by side" not in everything
    assert f"{expected[0]} keeps most robust accuracy" in everything or "tie for most robust accuracy" in everything
    assert _n_images(nb) >= 7  # the four granularity figures and the three method figures


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_run_on_a_run_with_only_results_and_one_eps(stripped_run: Path, tmp_path: Path, monkeypatch, path):
    probe = PROBE_EXPLORE if path == EXPLORE else PROBE_GRANULARITIES
    nb = _execute(path, stripped_run, tmp_path, monkeypatch, probe=probe)
    results = pd.read_csv(stripped_run / "results.csv")
    found = _probe(nb)
    assert found["eps"] == pytest.approx(results["eps"].max())
    if path == EXPLORE:
        assert found["comparison"] is None  # no outcomes.csv.gz: no paired comparison, and it says why
        everything = "".join(_texts(cell) for cell in nb.cells)
        assert "no outcomes.csv.gz" in everything
        # no model folders: reports.try_figure's logged reason reaches the notebook's output
        assert "fig_layer_sparsity: nothing to draw (no sparse model has a layer_sparsity.csv" in everything
        summary = _last_code_output(nb)
        assert all(model_id in summary for model_id in results["model_id"].unique()), summary
    else:
        robust = results[results["attack"] != "clean"].groupby("model_id")["accuracy"].min()
        assert sorted(found["robust"].values()) == pytest.approx(sorted(robust))


def test_notebook_names_the_missing_run_dir(tmp_path: Path, monkeypatch):
    missing = tmp_path / "no-such-run"
    with pytest.raises(CellExecutionError, match="ROBUSTSPARSE_RUN_DIR"):
        _execute(EXPLORE, missing, tmp_path, monkeypatch)
