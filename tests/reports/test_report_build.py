"""build_report: every file is written, the page is self-contained, the first screen shows the findings."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

import pandas as pd
import pytest

import reports.build
from reports import ReportError, build_report, summarize
from reports.load import load_meta, load_outcomes, load_results, load_sanity

FIGURES = [
    "accuracy_vs_eps",
    "delta_vs_eps",
    "delta_heatmap",
    "clean_vs_robust",
    "layer_sparsity",
    "attack_success",
    "compression_axis",
]
TABLES = [
    "compression",
    "deltas_at_eps",
    "deltas",
    "deltas_per_model",
    "accuracy",
    "accuracy_mean",
    "robust_vs_clean",
    "sanity",
    "models",
    "layer_sparsity",
    "metadata",
]


@pytest.fixture(scope="module")
def built(shared_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_report(shared_run, out_dir=tmp_path_factory.mktemp("built") / "report")


def test_every_file_is_written(built: Path) -> None:
    root = built.parent
    assert built.name == "index.html" and built.is_file()
    assert (root / "report.md").is_file()
    assert sorted(p.stem for p in (root / "figures").glob("*.png")) == sorted(FIGURES)
    for png in (root / "figures").glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.stem for p in (root / "tables").glob("*.csv")) == sorted(TABLES)
    for csv in (root / "tables").glob("*.csv"):
        assert len(pd.read_csv(csv)) > 0
    assert not [p for p in root.parent.iterdir() if p.name.startswith(".")]  # no temp folder left


def test_html_is_self_contained(built: Path) -> None:
    page = built.read_text(encoding="utf-8")
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", page, flags=re.I)
    assert refs, "expected image sources and in-page links"
    assert all(r.startswith(("data:", "#")) for r in refs), [r for r in refs if not r.startswith(("data:", "#"))]
    assert not re.search(r"https?://", page)
    assert 'id="methods"' not in page and "Methods side by side" not in page  # one method: no methods section
    assert "<script" not in page.lower() and "@import" not in page and "url(" not in page
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)"', page)
    pngs = {p.read_bytes() for p in (built.parent / "figures").glob("*.png")}
    assert len(images) == len(pngs) and {base64.b64decode(i) for i in images} == pngs


def test_first_screen_shows_the_findings_in_order(built: Path, shared_run: Path) -> None:
    page = built.read_text(encoding="utf-8")
    findings = summarize(
        load_results(shared_run), load_outcomes(shared_run), meta=load_meta(shared_run), sanity=load_sanity(shared_run)
    )
    section = page[page.index('id="findings"') : page.index('id="figures"')]
    items = [
        html.unescape(re.sub(r"\s+", " ", i)).strip() for i in re.findall(r"<li[^>]*>(.*?)</li>", section, flags=re.S)
    ]
    assert items == [f.text for f in findings]
    positions = [page.index(f'id="{part}"') for part in ["findings", "figures", "tables", "metadata"]]
    assert positions == sorted(positions)
    md = (built.parent / "report.md").read_text(encoding="utf-8")
    assert md.index("## Findings") < md.index(findings[-1].text) < md.index("## Figures")
    for name in FIGURES:
        assert f"(figures/{name}.png)" in md


def test_tables_hold_the_numbers_of_the_results(built: Path, shared_run: Path) -> None:
    acc = pd.read_csv(built.parent / "tables" / "accuracy.csv")
    raw = pd.read_csv(shared_run / "results.csv")
    merged = acc.merge(raw, on=["model_id", "key"], suffixes=("", "_raw"))
    assert len(merged) == len(raw) == len(acc)
    assert (merged["n_correct"] == merged["n_correct_raw"]).all()
    meta = pd.read_csv(built.parent / "tables" / "metadata.csv")
    assert {"seeds", "versions", "examples per evaluation", "config digest"} <= set(meta["item"])


def test_rebuild_replaces_the_report(synthetic_run: Path) -> None:
    first = build_report(synthetic_run)
    page, figure = first.read_bytes(), (first.parent / "figures" / "delta_heatmap.png").read_bytes()
    assert build_report(synthetic_run).read_bytes() == page  # same inputs, same bytes
    assert (first.parent / "figures" / "delta_heatmap.png").read_bytes() == figure
    (first.parent / "stale.txt").write_text("from an older build")
    second = build_report(synthetic_run, eps="4/255")
    assert second == first == synthetic_run / "report" / "index.html"
    assert not (second.parent / "stale.txt").exists()
    assert "at eps 4/255" in second.read_text(encoding="utf-8")
    assert sorted(p.name for p in synthetic_run.iterdir() if p.name.startswith(".")) == []


def test_a_crash_while_writing_keeps_the_old_report(synthetic_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    index = build_report(synthetic_run)
    before = index.read_bytes()

    def broken(_content: object) -> str:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(reports.build, "render_html", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        build_report(synthetic_run, eps="2/255")
    assert index.read_bytes() == before
    assert sorted(p.name for p in synthetic_run.iterdir() if p.name.startswith(".")) == []


def test_missing_results_is_a_report_error(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="results"):
        build_report(tmp_path)
    assert not (tmp_path / "report").exists()


def test_unknown_eps_is_a_report_error(shared_run: Path, tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="3/255.*2/255, 4/255, 8/255"):
        build_report(shared_run, out_dir=tmp_path / "r", eps="3/255")


def test_a_run_with_only_the_results_table_still_builds(run_factory) -> None:
    run = run_factory(granularities=(), seeds=(0,))
    for name in ["outcomes.csv.gz", "sanity.csv", "config.yaml"]:
        (run / name).unlink()
    for meta in (run / "models").glob("*/*"):
        meta.unlink()
    index = build_report(run)
    page = index.read_text(encoding="utf-8")
    assert "No per-example outcomes" in page and "skipped" in page
    drawn = sorted(p.stem for p in (index.parent / "figures").glob("*.png"))
    assert drawn == ["accuracy_vs_eps", "attack_success", "clean_vs_robust"]
    assert "Figure &#39;delta_vs_eps&#39; skipped: no sparse models" in page


def test_several_settings_get_one_figure_set_each(run_factory) -> None:
    run = run_factory(seeds=(0,))
    raw = pd.read_csv(run / "results.csv")
    other = raw.assign(dataset="cifar10", arch="resnet20", model_id=raw["model_id"] + "-c")
    pd.concat([raw, other]).to_csv(run / "results.csv", index=False)
    (run / "outcomes.csv.gz").unlink()
    index = build_report(run)
    names = sorted(p.stem for p in (index.parent / "figures").glob("*.png"))
    assert "accuracy_vs_eps__cifar10-resnet20" in names and "accuracy_vs_eps__digits-smallcnn" in names
    assert "cifar10 / resnet20: At 70% sparsity" in index.read_text(encoding="utf-8")


def test_a_minimum_norm_attack_adds_the_norm_threshold_figure(run_factory) -> None:
    index = build_report(run_factory(seeds=(0,), include_cw=True))
    drawn = sorted(p.stem for p in (index.parent / "figures").glob("*.png"))
    assert drawn == sorted([*FIGURES, "accuracy_vs_norm"])
    assert "perturbation-norm threshold" in index.read_text(encoding="utf-8")
