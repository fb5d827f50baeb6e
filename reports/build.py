"""Build the report of a finished run: compute its content, render it, write report/ atomically.

build_report(run_dir) -> run_dir/report/index.html
    report/index.html   self-contained page (figures as base64 PNG, inline style, no script)
    report/report.md    the same in Markdown, figures linked from figures/
    report/figures/*.png, report/tables/*.csv
"""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from reports.errors import NothingToPlot, ReportError
from reports.figures import (
    fig_accuracy_vs_eps,
    fig_attack_success,
    fig_clean_vs_robust,
    fig_delta_heatmap,
    fig_delta_vs_eps,
    fig_layer_sparsity,
)
from reports.labels import choose_eps, eps_label_of, settings_of
from reports.load import (
    load_config,
    load_layer_sparsity,
    load_meta,
    load_outcomes,
    load_results,
    load_sanity,
)
from reports.render import render_html, render_markdown
from reports.summary import Finding, summarize
from reports.tables import (
    accuracy_table,
    aggregate_accuracy,
    annotated,
    check_outcomes,
    grid_deltas,
    metadata_table,
    model_deltas,
    model_table,
    robust_vs_clean,
    sanity_table,
)

__all__ = ["FigureItem", "TableItem", "ReportContent", "assemble_report", "write_report", "build_report"]

log = logging.getLogger(__name__)

_DPI = 110
# the eps axes of the per-eps figures (see figures._eps_axis)
_EPS_AXIS = (
    "The eps axis is linear from 0 to the smallest eps of each panel and logarithmic above it, so a "
    "sweep that doubles eps is evenly spaced."
)


@dataclass
class FigureItem:
    """One figure of the report, already rendered to PNG bytes."""

    name: str
    title: str
    caption: str
    png: bytes


@dataclass
class TableItem:
    """One table: `data` (raw numbers) goes to tables/<name>.csv, `shown` (a column subset) onto the pages."""

    name: str
    title: str
    caption: str
    data: pd.DataFrame
    shown: pd.DataFrame | None = None
    collapsed: bool = False


@dataclass
class ReportContent:
    """Everything the report shows, computed from the run's files; rendering and writing come after."""

    title: str
    findings: list[Finding]
    figures: list[FigureItem]
    tables: list[TableItem]
    metadata: pd.DataFrame
    config_text: str = ""
    notes: list[str] = field(default_factory=list)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, metadata={"Software": None})
    return buf.getvalue()


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _figure(notes: list[str], what: str, make: Callable[[], Figure]) -> Figure | None:
    """Draw one figure; when the data hold nothing for it, note why and go on."""
    try:
        return make()
    except NothingToPlot as exc:
        log.info("skipped figure %s: %s", what, exc)
        notes.append(f"Figure '{what}' skipped: {exc}.")
        return None


def _figures_for(
    df: pd.DataFrame,
    outcomes: pd.DataFrame | None,
    meta: pd.DataFrame | None,
    layers: pd.DataFrame,
    eps: float | str | None,
    alpha: float,
    suffix: str,
    notes: list[str],
) -> list[FigureItem]:
    try:
        e: float | None = choose_eps(df, eps)
        label_eps = eps_label_of(df, e)
    except ReportError as exc:
        if eps is not None and "was not evaluated" in str(exc):
            raise
        e, label_eps = None, ""
    names = f" ({suffix})" if suffix else ""
    tag = f"__{_slug(suffix)}" if suffix else ""
    specs: list[tuple[str, str, str, Callable[[], Figure]]] = [
        (
            "accuracy_vs_eps",
            "Robust accuracy vs eps",
            "Accuracy under each attack as eps grows (eps 0: clean accuracy). Lines: mean over seeds per granularity "
            "(colour) and target sparsity (marker); dashed black: dense. Bands: 95% interval, the wider of the Wilson "
            f"interval on the test examples and the between-seed t-interval. {_EPS_AXIS}",
            lambda: fig_accuracy_vs_eps(df),
        ),
        (
            "delta_vs_eps",
            "Change in accuracy vs dense against eps",
            "Mean over seeds of each sparse model's accuracy minus its dense counterpart's, in percentage points, "
            "under each attack as eps grows (eps 0: the change in clean accuracy). Lines: granularity (colour) and "
            f"target sparsity (marker); dashed black at 0: dense (below it: less robust than dense). {_EPS_AXIS}",
            lambda: fig_delta_vs_eps(df, meta=meta),
        ),
        (
            "delta_heatmap",
            f"Change in robust accuracy vs dense at eps {label_eps}",
            "Mean over seeds of each sparse model's accuracy minus its dense counterpart's, in percentage points "
            f"(blue: more robust than dense, red: less). * marks McNemar's exact test p < {alpha:g} on the same test "
            "examples (discordant pairs pooled over seeds, no multiple-comparison correction).",
            lambda: fig_delta_heatmap(df, outcomes, meta=meta, eps=e, alpha=alpha),
        ),
        (
            "clean_vs_robust",
            "Clean accuracy, robust accuracy and compression",
            f"One point per model. Robust accuracy: the worst case over the eps-budget attacks at eps {label_eps}, per "
            "example (robust only if every attack failed on it). "
            "Compression: total / non-zero weights. Dotted: Pareto front (no other model is better on both axes).",
            lambda: fig_clean_vs_robust(df, meta, eps=e, outcomes=outcomes),
        ),
        (
            "layer_sparsity",
            "Per-layer sparsity",
            "Fraction of zero weights per layer (mean over seeds), one panel per target sparsity; dotted: the target.",
            lambda: fig_layer_sparsity(layers[layers["model_id"].isin(df["model_id"])], df),
        ),
        (
            "attack_success",
            "Attack success rate and perturbation norms",
            f"Share of clean-correct examples the attack fools at eps {label_eps} (bars: mean over seeds, error bar: "
            "seed sd; dashed: dense). Minimum-norm attacks: size of the perturbations they need (larger is more "
            "robust).",
            lambda: fig_attack_success(df, eps=e),
        ),
    ]
    items = []
    for name, title, caption, make in specs:
        if e is None and name in {"delta_heatmap", "clean_vs_robust"}:
            notes.append(f"Figure '{name}{tag}' skipped: no attack with an eps budget was run.")
            continue
        fig = _figure(notes, f"{name}{tag}", make)
        if fig is not None:
            items.append(FigureItem(f"{name}{tag}", title + names, caption, _png(fig)))
    return items


def _deltas_shown(grid: pd.DataFrame, several: bool) -> pd.DataFrame:
    cols = (["setting"] if several else []) + [
        "label",
        "sparsity_pct",
        "series",
        "eps_label",
        "n_seeds",
        "accuracy",
        "dense_accuracy",
        "delta_pp",
        "delta_sd",
        "sparse_only",
        "dense_only",
        "p_value",
    ]
    order = grid.sort_values(
        ["setting", "is_clean", "series", "eps_key", "target_sparsity", "label"],
        ascending=[True, False, True, True, True, True],
        kind="stable",
    )
    return order[cols].reset_index(drop=True)


def assemble_report(
    results: pd.DataFrame,
    *,
    outcomes: pd.DataFrame | None = None,
    meta: pd.DataFrame | None = None,
    layer_sparsity: pd.DataFrame | None = None,
    sanity: pd.DataFrame | None = None,
    config: dict[str, Any] | None = None,
    config_text: str = "",
    title: str = "robustsparse report",
    eps: float | str | None = None,
    alpha: float = 0.05,
) -> ReportContent:
    """Compute every finding, figure and table of the report from the run's tables.

    Args:
        results: Validated results table.
        outcomes: Per-example outcomes (McNemar tests; optional).
        meta: Per-model metadata (optional).
        layer_sparsity: Per-layer sparsity of every model (optional).
        sanity: Sanity-check flags (optional).
        config: Parsed config.yaml (optional).
        config_text: Raw config.yaml, shown verbatim.
        title: Page title.
        eps: The eps for one-eps views (default: see `labels.choose_eps`).
        alpha: Significance level.

    Returns:
        The report's content, with figures rendered to PNG bytes.
    """
    df = annotated(results)
    notes: list[str] = []
    if outcomes is None:
        notes.append("No per-example outcomes (outcomes.csv.gz): changes vs dense have no McNemar test.")
    else:
        notes.extend(check_outcomes(df, outcomes))
    if meta is None or meta.empty:
        notes.append("No models/<id>/meta.json: compression comes from the achieved sparsity of the prunable weights.")
        meta = None
    else:
        unknown = sorted(set(df["model_id"]) - set(meta["model_id"]))
        if unknown:
            notes.append(f"{len(unknown)} model(s) in results.csv have no meta.json (first: {unknown[0]}).")
    if layer_sparsity is None:
        layer_sparsity = pd.DataFrame(columns=["model_id", "layer_index", "name", "sparsity"])
    if sanity is None:
        notes.append("No sanity-check table (sanity.csv).")

    findings = summarize(df, outcomes, meta=meta, sanity=sanity, eps=eps, alpha=alpha)
    settings = settings_of(df)
    several = len(settings) > 1
    figures: list[FigureItem] = []
    for setting in settings:
        figures += _figures_for(
            df[df["setting"] == setting], outcomes, meta, layer_sparsity, eps, alpha, setting if several else "", notes
        )

    tables: list[TableItem] = []
    has_pairs = bool(df["is_dense"].any() and (~df["is_dense"]).any())
    if has_pairs:
        per_model = model_deltas(df, outcomes, meta)
        grid = grid_deltas(per_model)
        shown = _deltas_shown(grid, several)
        at_eps = grid["is_clean"].copy()
        for setting in settings:
            try:
                e = choose_eps(df[df["setting"] == setting], eps)
            except ReportError:
                continue
            at_eps |= (grid["setting"] == setting) & np.isclose(grid["eps_key"], e, rtol=1e-6, atol=1e-9)
        tables.append(
            TableItem(
                "deltas_at_eps",
                "Change vs dense at the headline eps",
                "Mean over seeds; change in percentage points; McNemar p on discordant pairs pooled over seeds",
                grid[at_eps].reset_index(drop=True),
                _deltas_shown(grid[at_eps], several),
            )
        )
        tables.append(
            TableItem("deltas", "Change vs dense, every attack and eps", "Mean over seeds", grid, shown, collapsed=True)
        )
        tables.append(
            TableItem(
                "deltas_per_model",
                "Change vs dense, per model",
                "Each sparse model against its dense counterpart (match: parent, same seed, or the dense mean)",
                per_model,
                per_model[
                    [
                        "model_id",
                        "dense_model_id",
                        "match",
                        "series",
                        "eps_label",
                        "accuracy",
                        "dense_accuracy",
                        "delta_pp",
                        "sparse_only",
                        "dense_only",
                        "p_value",
                    ]
                ],
                collapsed=True,
            )
        )
    else:
        notes.append("The run has no dense/sparse pair, so there is no change-vs-dense table.")
    acc = accuracy_table(df)
    tables.append(
        TableItem(
            "accuracy",
            "Accuracy per model, attack and eps",
            "With 95% Wilson intervals",
            acc,
            acc.drop(columns=["eps", "key", "setting"] if not several else ["eps", "key"]),
            collapsed=True,
        )
    )
    mean_acc = aggregate_accuracy(df)
    tables.append(
        TableItem(
            "accuracy_mean",
            "Accuracy per model family (mean over seeds)",
            "Band: the wider of the mean Wilson interval and the between-seed t-interval",
            mean_acc,
            mean_acc[
                [
                    "label",
                    "sparsity_pct",
                    "series",
                    "eps_label",
                    "n_seeds",
                    "accuracy",
                    "accuracy_sd",
                    "band_low",
                    "band_high",
                ]
            ],
            collapsed=True,
        )
    )
    for setting in settings:
        sub = df[df["setting"] == setting]
        try:
            e = choose_eps(sub, eps)
        except ReportError:
            continue
        rvc = robust_vs_clean(sub, meta, eps=e, outcomes=outcomes)
        name = "robust_vs_clean" + (f"__{_slug(setting)}" if several else "")
        tables.append(
            TableItem(
                name,
                f"Clean and worst-case robust accuracy at eps {eps_label_of(sub, e)}"
                + (f" ({setting})" if several else ""),
                "Per model, with compression and Pareto-front membership",
                rvc,
                rvc[
                    [
                        "model_id",
                        "label",
                        "sparsity_pct",
                        "seed",
                        "clean_accuracy",
                        "robust_accuracy",
                        "robust_basis",
                        "worst_attack",
                        "worst_attack_accuracy",
                        "compression",
                        "front_clean_robust",
                        "front_compression_robust",
                    ]
                ],
                collapsed=True,
            )
        )
    if sanity is not None:
        flags = sanity_table(sanity)
        tables.append(
            TableItem(
                "sanity",
                "Sanity checks",
                "Failures first, with their evidence",
                flags,
                flags,
                collapsed=bool(flags["passed"].all()),
            )
        )
    if meta is not None:
        models = model_table(meta)
        tables.append(TableItem("models", "Models", "From each model's meta.json", models, models, collapsed=True))
    if len(layer_sparsity):
        tables.append(TableItem("layer_sparsity", "Per-layer sparsity", "Every layer of every model", layer_sparsity))
    metadata = metadata_table(df, meta, config)
    tables.append(TableItem("metadata", "Run metadata", "Also shown in the Metadata section", metadata))
    return ReportContent(
        title=title,
        findings=findings,
        figures=figures,
        tables=tables,
        metadata=metadata,
        config_text=config_text,
        notes=notes,
    )


def _write_text(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def write_report(content: ReportContent, out_dir: str | Path) -> Path:
    """Write the report's files into `out_dir`, replacing what was there, atomically.

    Everything is written into a temporary sibling folder first, which then takes the place of
    `out_dir` by rename, so a crash leaves either the old report or the new one, never half of one.

    Args:
        content: What `assemble_report` computed.
        out_dir: The report folder (e.g. run_dir/report).

    Returns:
        The path of index.html.

    Raises:
        ReportError: If `out_dir` exists and is not a folder.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ReportError(f"report path {str(out)!r} exists and is not a folder; remove it or choose another out_dir")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a report is meant to be read
        (tmp / "figures").mkdir()
        (tmp / "tables").mkdir()
        for fig in content.figures:
            (tmp / "figures" / f"{fig.name}.png").write_bytes(fig.png)
        for table in content.tables:
            table.data.to_csv(tmp / "tables" / f"{table.name}.csv", index=False)
        _write_text(tmp / "report.md", render_markdown(content))
        _write_text(tmp / "index.html", render_html(content))
        if out.exists():
            old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out / "index.html"


def build_report(
    run_dir: str | Path,
    *,
    out_dir: str | Path | None = None,
    eps: float | str | None = None,
    alpha: float = 0.05,
) -> Path:
    """Read a finished run directory and write its report.

    Reads results.csv (required), outcomes.csv.gz, sanity.csv, config.yaml and every
    models/<id>/meta.json and layer_sparsity.csv (each optional: a missing piece is named in the
    report's notes). Never loads a model.

    Args:
        run_dir: The run directory.
        out_dir: Where to write the report (default: run_dir/report).
        eps: The eps for the heatmap, trade-off and success-rate views, e.g. "8/255"
            (default: the budget shared by most attacks, ties to the larger).
        alpha: Significance level for McNemar marks and words.

    Returns:
        The path of the written index.html.

    Raises:
        ReportError: If results.csv is missing or malformed, or `eps` was not evaluated.

    Example:
        >>> build_report("runs/digits-quick")  # doctest: +SKIP
        PosixPath('runs/digits-quick/report/index.html')
    """
    run = Path(run_dir)
    results = load_results(run)
    config = load_config(run, missing_ok=True)
    parsed, text = config if config is not None else ({}, "")
    name = str(parsed.get("name") or run.resolve().name)
    content = assemble_report(
        results,
        outcomes=load_outcomes(run, missing_ok=True),
        meta=load_meta(run, missing_ok=True),
        layer_sparsity=load_layer_sparsity(run, missing_ok=True),
        sanity=load_sanity(run, missing_ok=True),
        config=parsed,
        config_text=text,
        title=f"robustsparse report: {name}",
        eps=eps,
        alpha=alpha,
    )
    index = write_report(content, Path(out_dir) if out_dir is not None else run / "report")
    log.info("report written to %s", index)
    return index
