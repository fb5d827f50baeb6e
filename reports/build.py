"""Build the report of a finished run: compute its content, render it, write report/ atomically.

build_report(run_dir) -> run_dir/report/index.html
    report/index.html   self-contained page (figures as base64 PNG, inline style, no script)
    report/report.md    the same in Markdown, figures linked from figures/
    report/figures/*.png, report/tables/*.csv
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from reports.atomic import atomic_dir, write_parquet_atomic
from reports.compression import (
    compression_families,
    compression_points,
    compression_words,
    equal_macs_comparison,
)
from reports.compression_figures import compression_axis_caption, fig_compression_axis
from reports.content import METHODS_SECTION, FigureItem, ReportContent, TableItem
from reports.contract import REPORT_DIR, RESULTS_PARQUET_FILE
from reports.errors import NothingToPlot, ReportError
from reports.figures import (
    accuracy_vs_eps_caption,
    accuracy_vs_norm_caption,
    attack_success_caption,
    clean_vs_robust_caption,
    delta_heatmap_caption,
    delta_vs_eps_caption,
    fig_accuracy_vs_eps,
    fig_accuracy_vs_norm,
    fig_attack_success,
    fig_clean_vs_robust,
    fig_delta_heatmap,
    fig_delta_vs_eps,
    fig_layer_sparsity,
    layer_sparsity_caption,
)
from reports.labels import choose_eps, eps_label_of, points_text, settings_of, sparsity_text
from reports.load import (
    load_layer_sparsity,
    load_meta,
    load_outcomes,
    load_results,
    load_sanity,
    read_run_config_file,
)
from reports.method_figures import (
    fig_method_heatmap,
    fig_method_pareto,
    fig_methods_vs_eps,
    method_heatmap_caption,
    method_pareto_caption,
    methods_vs_eps_caption,
)
from reports.methods import PAIR_COLUMNS, SPARSITY_TOLERANCE, compares_methods, method_comparison, method_pairs
from reports.render import render_html, render_markdown
from reports.robustbench import ROBUSTBENCH_DIR, robustbench_entries, write_robustbench
from reports.stats import CORRECTIONS, correction_words
from reports.summary import summarize
from reports.tables import (
    accuracy_table,
    aggregate_accuracy,
    annotated,
    check_outcomes,
    failed_models,
    grid_deltas,
    metadata_table,
    model_deltas,
    model_table,
    robust_vs_clean,
    sanity_table,
)

__all__ = ["assemble_report", "write_report", "build_report"]

log = logging.getLogger(__name__)

_DPI = 110


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
    correction: str,
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
        ("accuracy_vs_eps", "Robust accuracy vs eps", accuracy_vs_eps_caption(), lambda: fig_accuracy_vs_eps(df)),
        (
            "delta_vs_eps",
            "Change in accuracy vs dense against eps",
            delta_vs_eps_caption(),
            lambda: fig_delta_vs_eps(df, meta=meta),
        ),
        (
            "delta_heatmap",
            f"Change in robust accuracy vs dense at eps {label_eps}",
            delta_heatmap_caption(alpha, correction),
            lambda: fig_delta_heatmap(df, outcomes, meta=meta, eps=e, alpha=alpha, correction=correction),
        ),
        (
            "clean_vs_robust",
            "Clean accuracy, robust accuracy and compression",
            clean_vs_robust_caption(label_eps),
            lambda: fig_clean_vs_robust(df, meta, eps=e, outcomes=outcomes),
        ),
        (
            "layer_sparsity",
            "Per-layer sparsity",
            layer_sparsity_caption(),
            lambda: fig_layer_sparsity(layers[layers["model_id"].isin(df["model_id"])], df),
        ),
        (
            "attack_success",
            "Attack success rate and perturbation norms",
            attack_success_caption(label_eps),
            lambda: fig_attack_success(df, eps=e),
        ),
    ]
    if outcomes is not None and (df["eps_kind"] == "minimum_norm").any():
        specs.append(
            (
                "accuracy_vs_norm",
                "Robust accuracy against the perturbation-norm threshold",
                accuracy_vs_norm_caption(),
                lambda: fig_accuracy_vs_norm(df, outcomes[outcomes["model_id"].isin(df["model_id"])]),
            )
        )
    items = []
    for name, title, caption, make in specs:
        if e is None and name in {"delta_heatmap", "clean_vs_robust"}:
            notes.append(f"Figure '{name}{tag}' skipped: no attack with an eps budget was run.")
            continue
        fig = _figure(notes, f"{name}{tag}", make)
        if fig is not None:
            items.append(FigureItem(f"{name}{tag}", title + names, caption, _png(fig)))
    return items


_METHODS_SHOWN = [
    "label",
    "sparsity_pct",
    "achieved_sparsity",
    "off_level_pp",
    "matched",
    "macs_fraction",
    "total_epochs",
    "n_seeds",
    "series",
    "rank",
    "accuracy",
    "delta_pp",
    "delta_low_pp",
    "delta_high_pp",
    "p_adjusted",
    "clean_accuracy",
    "robust_accuracy",
]
_PAIRS_SHOWN = [c for c in PAIR_COLUMNS if c not in ("setting", "target_sparsity", "n_seeds")]


def _method_items(
    df: pd.DataFrame,
    outcomes: pd.DataFrame | None,
    meta: pd.DataFrame | None,
    eps: float | str | None,
    alpha: float,
    correction: str,
    suffix: str,
    notes: list[str],
) -> tuple[list[FigureItem], list[TableItem]]:
    """The methods-side-by-side figures and tables of one setting; none when it has a single method."""
    if not compares_methods(df):
        return [], []
    try:
        e = choose_eps(df, eps)
    except ReportError as exc:
        if eps is not None and "was not evaluated" in str(exc):
            raise
        notes.append("Methods side by side skipped: no attack with an eps budget was run.")
        return [], []
    label_eps = eps_label_of(df, e)
    names = f" ({suffix})" if suffix else ""
    tag = f"__{_slug(suffix)}" if suffix else ""
    specs: list[tuple[str, str, str, Callable[[], Figure]]] = [
        (
            "methods_vs_eps",
            "Robust accuracy vs eps per method, at equal target sparsity",
            methods_vs_eps_caption(),
            lambda: fig_methods_vs_eps(df),
        ),
        (
            "methods_heatmap",
            f"Methods x sparsity: change in robust accuracy vs dense at eps {label_eps}",
            method_heatmap_caption(alpha, correction, SPARSITY_TOLERANCE),
            lambda: fig_method_heatmap(df, outcomes, meta=meta, eps=e, alpha=alpha, correction=correction),
        ),
        (
            "methods_pareto",
            "Clean vs robust accuracy and compute, methods as colours",
            method_pareto_caption(label_eps),
            lambda: fig_method_pareto(df, meta, eps=e, outcomes=outcomes),
        ),
    ]
    figures = []
    for name, title, caption, make in specs:
        fig = _figure(notes, f"{name}{tag}", make)
        if fig is not None:
            figures.append(FigureItem(f"{name}{tag}", title + names, caption, _png(fig), section=METHODS_SECTION))
    comparison = method_comparison(df, outcomes, meta, eps=e, correction=correction)
    tables = [
        TableItem(
            f"methods{tag}",
            f"Methods at equal target sparsity, eps {label_eps}" + names,
            "Per method / granularity and level under the headline attack (every attack at this eps in the CSV): "
            "achieved sparsity and its distance from the level's median (equal sparsity: within "
            f"{points_text(SPARSITY_TOLERANCE)}), effective MACs, training budget, rank by robust accuracy, "
            "change vs dense with its exact 95% interval and adjusted McNemar p, clean and worst-case robust accuracy",
            comparison,
            comparison.loc[comparison["is_headline"], _METHODS_SHOWN].rename(columns={"label": "method / granularity"}),
            section=METHODS_SECTION,
        )
    ]
    pairs = method_pairs(df, outcomes, comparison, eps=e, correction=correction)
    if len(pairs):
        tables.append(
            TableItem(
                f"method_pairs{tag}",
                "The most robust method at each level against each other method there, on the same examples" + names,
                "Paired on the same examples seed by seed, discordant examples pooled over the seeds both share; "
                f"exact McNemar p and the exact 95% interval of the difference (points), {correction_words(correction)} "
                "(these tests a family of their own)",
                pairs,
                pairs[_PAIRS_SHOWN],
                section=METHODS_SECTION,
            )
        )
    return figures, tables


_COMPRESSION_SHOWN = [
    "label",
    "sparsity_pct",
    "n_seeds",
    "macs_fraction",
    "params_fraction",
    "clean_accuracy",
    "robust_accuracy",
    "robust_low",
    "robust_high",
]
_EQUAL_MACS_SHOWN = [
    "level_low",
    "level_high",
    "rank",
    "method",
    "label",
    "macs_fraction",
    "params_fraction",
    "robust_accuracy",
    "robust_low",
    "robust_high",
    "ahead",
    "delta_vs_dense_pp",
]


def _compression_items(
    df: pd.DataFrame,
    outcomes: pd.DataFrame | None,
    meta: pd.DataFrame | None,
    eps: float | str | None,
    suffix: str,
    notes: list[str],
) -> tuple[list[FigureItem], list[TableItem]]:
    """The common compression axis of one setting: the figure, the families on it, methods at equal MACs."""
    try:
        e = choose_eps(df, eps)
    except ReportError as exc:
        if eps is not None and "was not evaluated" in str(exc):
            raise
        return [], []
    names = f" ({suffix})" if suffix else ""
    tag = f"__{_slug(suffix)}" if suffix else ""
    label_eps = eps_label_of(df, e)
    fig = _figure(notes, f"compression_axis{tag}", lambda: fig_compression_axis(df, meta, eps=e, outcomes=outcomes))
    if fig is None:
        return [], []
    figures = [
        FigureItem(
            f"compression_axis{tag}",
            f"Robust accuracy against MACs and parameters, every method, at eps {label_eps}" + names,
            compression_axis_caption(label_eps),
            _png(fig),
        )
    ]
    families = compression_families(compression_points(df, meta, eps=e, outcomes=outcomes))
    families = families.assign(sparsity_pct=families["target_sparsity"].map(sparsity_text))
    families.loc[families["is_dense"].astype(bool), "sparsity_pct"] = "dense"
    tables = [
        TableItem(
            f"compression{tag}",
            f"Every family on the compression axis at eps {label_eps}" + names,
            "Effective MACs and non-zero parameters as a share of the dense model's (mean over seeds); clean accuracy "
            "(mean) and worst-case robust accuracy pooled over seeds with its 95% Wilson interval",
            families,
            families[_COMPRESSION_SHOWN],
            collapsed=True,
        )
    ]
    comparison = equal_macs_comparison(families)
    if (comparison["n_methods"] > 1).any():
        tables.append(
            TableItem(
                f"equal_macs{tag}",
                f"Methods at equal MACs, eps {label_eps}" + names,
                compression_words(),
                comparison,
                comparison[_EQUAL_MACS_SHOWN],
            )
        )
    return figures, tables


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
        "delta_low_pp",
        "delta_high_pp",
        "p_value",
        "p_adjusted",
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
    correction: str = "holm",
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
        correction: Multiple-comparison correction of the McNemar p-values (`stats.CORRECTIONS`).

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
        failed = failed_models(meta)
        if len(failed):  # listed apart, never as a result
            listed = "; ".join(f"{r.model_id} ({r.failure})" for r in failed.itertuples(index=False))
            notes.append(f"{len(failed)} model(s) failed to train and have no results: {listed}.")
            meta = meta[~meta["model_id"].isin(failed["model_id"])].reset_index(drop=True)
        unknown = sorted(set(df["model_id"]) - set(meta["model_id"]))
        if unknown:
            notes.append(f"{len(unknown)} model(s) in results.csv have no meta.json (first: {unknown[0]}).")
    if layer_sparsity is None:
        layer_sparsity = pd.DataFrame(columns=["model_id", "layer_index", "name", "sparsity"])
    if sanity is None:
        notes.append("No sanity-check table (sanity.csv).")

    findings = summarize(df, outcomes, meta=meta, sanity=sanity, eps=eps, alpha=alpha, correction=correction)
    settings = settings_of(df)
    several = len(settings) > 1
    figures: list[FigureItem] = []
    for setting in settings:
        figures += _figures_for(
            df[df["setting"] == setting],
            outcomes,
            meta,
            layer_sparsity,
            eps,
            alpha,
            correction,
            setting if several else "",
            notes,
        )

    tables: list[TableItem] = []
    for setting in settings:
        axis_figures, axis_tables = _compression_items(
            df[df["setting"] == setting], outcomes, meta, eps, setting if several else "", notes
        )
        figures += axis_figures
        tables += axis_tables
    for setting in settings:
        method_figures, method_tables = _method_items(
            df[df["setting"] == setting], outcomes, meta, eps, alpha, correction, setting if several else "", notes
        )
        figures += method_figures
        tables += method_tables
    has_pairs = bool(df["is_dense"].any() and (~df["is_dense"]).any())
    if has_pairs:
        per_model = model_deltas(df, outcomes, meta, correction=correction)
        grid = grid_deltas(per_model, correction=correction)
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
                "Mean over seeds; change in percentage points with the exact 95% interval of the pooled paired "
                f"difference; McNemar p on discordant pairs pooled over seeds, {correction_words(correction)}",
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
                        "delta_low_pp",
                        "delta_high_pp",
                        "p_value",
                        "p_adjusted",
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
            "With 95% Wilson intervals of the accuracy and of the attack success rate",
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
                "Failures first, then the checks that could not run (neither passed nor failed), with their evidence",
                flags,
                flags,
                collapsed=bool((flags["status"] == "passed").all()),
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
        robustbench=robustbench_entries(df, meta),
    )


def write_report(content: ReportContent, out_dir: str | Path) -> Path:
    """Write the report's files into `out_dir`, replacing what was there, atomically.

    Everything is written into a temporary sibling folder first, which then takes the place of
    `out_dir` (`atomic.atomic_dir`), so a crash leaves either the old report or the new one, never half of one.

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
    with atomic_dir(out) as tmp:
        (tmp / "figures").mkdir()
        (tmp / "tables").mkdir()
        for fig in content.figures:
            (tmp / "figures" / f"{fig.name}.png").write_bytes(fig.png)
        for table in content.tables:
            table.data.to_csv(tmp / "tables" / f"{table.name}.csv", index=False)
        write_robustbench(content.robustbench, tmp / ROBUSTBENCH_DIR)
        (tmp / "report.md").write_text(render_markdown(content), encoding="utf-8")
        (tmp / "index.html").write_text(render_html(content), encoding="utf-8")
    return out / "index.html"


#: the package `--parquet` writes with (the `parquet` extra)
PARQUET_ENGINE = "pyarrow"


def _require_parquet() -> None:
    """Refuse before anything is written when pyarrow is missing."""
    import importlib.util

    if importlib.util.find_spec(PARQUET_ENGINE) is None:
        raise ReportError("--parquet needs pyarrow: install the extra with pip install 'robustsparse[parquet]'")


def build_report(
    run_dir: str | Path,
    *,
    out_dir: str | Path | None = None,
    eps: float | str | None = None,
    alpha: float = 0.05,
    correction: str = "holm",
    parquet: bool = False,
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
        alpha: Significance level for McNemar marks and words (applied to the adjusted p-values).
        correction: Multiple-comparison correction over each setting's McNemar tests: "holm"
            (default; family-wise error), "bh" (Benjamini-Hochberg; false discovery rate) or "none".
        parquet: Also write the results table as `results.parquet` in the report folder (needs
            pyarrow: the `parquet` extra).

    Returns:
        The path of the written index.html.

    Raises:
        ReportError: If results.csv is missing or malformed, `eps` was not evaluated, or
            `correction` is unknown.

    Example:
        >>> build_report("runs/digits-quick")  # doctest: +SKIP
        PosixPath('runs/digits-quick/report/index.html')
    """
    if correction not in CORRECTIONS:
        raise ReportError(f"unknown correction {correction!r}; choose one of {', '.join(CORRECTIONS)}")
    run = Path(run_dir)
    results = load_results(run)
    config = read_run_config_file(run, missing_ok=True)
    parsed, text = (config.settings, config.text) if config is not None else ({}, "")
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
        correction=correction,
    )
    if parquet:
        _require_parquet()
    index = write_report(content, Path(out_dir) if out_dir is not None else run / REPORT_DIR)
    if parquet:
        write_parquet_atomic(index.parent / RESULTS_PARQUET_FILE, results)
    log.info("report written to %s", index)
    return index
