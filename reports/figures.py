"""The report's figures, one function each: DataFrames in, a matplotlib Figure out, no file I/O.

Figures are built on `matplotlib.figure.Figure` directly (not pyplot), so nothing is left open in
pyplot's global registry and no display backend is needed; they show in notebooks as usual.
Each function draws one setting (dataset / arch); `build_report` calls it once per setting.
When the data hold nothing to draw, a function raises `NothingToPlot` with the reason;
`try_figure` (for notebooks) turns that into a logged reason and None.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import NullLocator

from reports.contract import LAYER_TOTAL_KIND, LAYER_TOTAL_NAMES
from reports.errors import NothingToPlot, ReportError
from reports.labels import choose_eps, eps_label_of, eps_text, settings_of, sparsity_text
from reports.stats import correction_words
from reports.tables import aggregate_accuracy, annotated, grid_deltas, model_deltas, robust_vs_clean

__all__ = [
    "try_figure",
    "fig_accuracy_vs_eps",
    "fig_delta_heatmap",
    "fig_delta_vs_eps",
    "fig_clean_vs_robust",
    "fig_layer_sparsity",
    "fig_attack_success",
    "fig_accuracy_vs_norm",
    "accuracy_vs_norm_caption",
]

log = logging.getLogger(__name__)

#: How the per-eps figures' x axis reads (see `_eps_axis`), for their captions.
EPS_AXIS_WORDS = (
    "The eps axis is linear from 0 to the smallest eps of each panel and logarithmic above it, so a "
    "sweep that doubles eps is evenly spaced."
)
# how the per-layer figure names the totals rows of layer_sparsity.csv
_TOTAL_NAMES = dict(zip(LAYER_TOTAL_NAMES, ["prunable total", "all weights"]))
_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">"]
_DENSE_COLOR = "black"
_EPS_XLABEL = "eps (pixel scale, log-spaced; 0: clean)"


@contextlib.contextmanager
def _style() -> Iterator[None]:
    """Seaborn's look for the figure being built, without changing the caller's global style."""
    with sns.axes_style("whitegrid"), sns.plotting_context("notebook", font_scale=0.85):
        yield


def _new_figure(
    n_axes: int, *, ncols_max: int = 3, width: float = 4.6, height: float = 3.6
) -> tuple[Figure, list[Axes]]:
    ncols = min(n_axes, ncols_max)
    nrows = -(-n_axes // ncols)
    fig = Figure(figsize=(width * ncols + 1.8, height * nrows + 0.6), layout="constrained")
    grid = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in grid[n_axes:]:
        fig.delaxes(ax)
    return fig, list(grid[:n_axes])


def try_figure(make_figure: Callable[..., Figure], /, *args: Any, **kwargs: Any) -> Figure | None:
    """Call one figure function; when the data hold nothing it can show, log why and return None.

    Meant for notebooks, which draw whatever a run holds: only `NothingToPlot` is caught (logged
    as a warning, which Jupyter shows), so a real error such as a bad eps still raises.

    Args:
        make_figure: A figure function, e.g. `fig_accuracy_vs_eps`.
        *args: Positional arguments for `make_figure`.
        **kwargs: Keyword arguments for `make_figure`.

    Returns:
        The figure, or None when `make_figure` raised `NothingToPlot`.

    Example:
        >>> fig = try_figure(fig_layer_sparsity, layers, results)  # doctest: +SKIP
    """
    try:
        return make_figure(*args, **kwargs)
    except NothingToPlot as reason:
        name = getattr(make_figure, "__name__", repr(make_figure))
        log.warning("%s: nothing to draw (%s)", name, reason)
        return None


def _one_setting(df: pd.DataFrame, what: str) -> pd.DataFrame:
    settings = settings_of(df)
    if len(settings) > 1:
        raise ReportError(
            f"{what}: the table holds {len(settings)} settings {settings}; filter it to one dataset/arch "
            "first (build_report draws one set of figures per setting)"
        )
    return df


def _sparse_labels(df: pd.DataFrame) -> list[str]:
    return sorted(df.loc[~df["is_dense"], "label"].unique())


def _sparsity_order(df: pd.DataFrame) -> list[str]:
    sparse = df[~df["is_dense"]].drop_duplicates("target_sparsity").sort_values("target_sparsity")
    return [sparsity_text(t) for t in sparse["target_sparsity"]]


def _palette(labels: Sequence[str]) -> dict[str, tuple[float, float, float]]:
    colors = sns.color_palette("colorblind", max(len(labels), 1))
    out = {label: colors[i % len(colors)] for i, label in enumerate(labels)}
    out["dense"] = (0.0, 0.0, 0.0)
    return out


def _family_styles(
    df: pd.DataFrame,
) -> tuple[list[str], list[str], dict[str, tuple[float, float, float]], dict[str, str]]:
    """Sparse labels, sparsity levels, a colour per label and a marker per sparsity level."""
    labels, sparsities = _sparse_labels(df), _sparsity_order(df)
    markers = {s: _MARKERS[i % len(_MARKERS)] for i, s in enumerate(sparsities)}
    return labels, sparsities, _palette(labels), markers


def _eps_curves(table: pd.DataFrame, empty_reason: str) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Split a per-eps table (with `eps`) into its eps-budget rows, its clean rows moved to eps 0, and the panels.

    Raises:
        NothingToPlot: With `empty_reason` when no row has an eps budget.
    """
    bounded = table[table["bounded"]]
    if bounded.empty:
        raise NothingToPlot(empty_reason)
    clean = table[table["is_clean"]].assign(eps=0.0, eps_label="0")
    return bounded, clean, list(dict.fromkeys(bounded.sort_values("eps")["series"]))


def _legend_handles(
    labels: Sequence[str], palette: dict, sparsities: Sequence[str], markers: dict, dense: bool
) -> list[Line2D]:
    handles = [Line2D([], [], color=palette[lab], lw=2, label=lab) for lab in labels]
    handles += [Line2D([], [], color="0.35", marker=markers[s], ls="", label=f"{s} sparsity") for s in sparsities]
    if dense:
        handles.append(Line2D([], [], color=_DENSE_COLOR, ls="--", lw=1.8, label="dense"))
    return handles


def _eps_axis(ax: Axes, values: pd.DataFrame) -> None:
    """Spread an eps sweep evenly enough to read: symlog x scale, one tick per eps, labelled as run.

    Sweeps usually double (2/255, 4/255, ..., 64/255), which crowds the small budgets at the left of a
    linear axis. A base-2 symlog scale whose linear part ends at the panel's smallest positive eps
    (linscale 0.5 makes that part as wide as one doubling) puts 0, eps_min, 2 eps_min, 4 eps_min, ...
    at equal steps; data stay in eps units, so lines, bands and the clean point at 0 are drawn as is.
    """
    pairs = values.drop_duplicates("eps").sort_values("eps")
    positive = pairs.loc[pairs["eps"] > 0, "eps"]
    if not positive.empty:
        ax.set_xscale("symlog", base=2, linthresh=float(positive.min()), linscale=0.5)
        # limits set in scale space: autoscaling may already have padded them linearly before the scale changed
        to_scale = ax.xaxis.get_transform()
        low, high = to_scale.transform(np.array([pairs["eps"].min(), pairs["eps"].max()], dtype=float))
        pad = 0.05 * (high - low)
        ax.set_xlim(*to_scale.inverted().transform(np.array([low - pad, high + pad])))
    ax.set_xticks(pairs["eps"].to_list())
    ax.set_xticklabels([eps_text(e, lab) if e > 0 else "0" for e, lab in zip(pairs["eps"], pairs["eps_label"])])
    ax.xaxis.set_minor_locator(NullLocator())  # symlog's default minor ticks would add unlabelled grid clutter


def fig_accuracy_vs_eps(results: pd.DataFrame) -> Figure:
    """Robust accuracy against eps, one panel per attack, one line per granularity x sparsity.

    Each line is the mean over seeds and starts at eps=0 with the clean accuracy; the band is the
    95% interval (the wider of the Wilson interval and the between-seed interval). Dense models
    are the dashed black reference line. The eps axis is symmetric-log (linear from 0 to the
    panel's smallest eps, base-2 log above), so a doubling sweep is evenly spaced.

    Args:
        results: Results table of one setting (raw or annotated).

    Returns:
        The figure: one axes per attack configuration with an eps budget.

    Raises:
        NothingToPlot: If no attack with an eps budget was run.

    Example:
        >>> fig = fig_accuracy_vs_eps(load_results("runs/digits-quick"))  # doctest: +SKIP
    """
    df = _one_setting(annotated(results), "fig_accuracy_vs_eps")
    agg = aggregate_accuracy(df)
    bounded, clean, series_list = _eps_curves(
        agg, "no attack with an eps budget was run, so there is no accuracy-vs-eps curve"
    )
    labels, sparsities, palette, markers = _family_styles(df)
    with _style():
        fig, axes = _new_figure(len(series_list))
        for ax, series in zip(axes, series_list):
            sub = bounded[bounded["series"] == series]
            data = pd.concat([clean[clean["label"].isin(sub["label"])], sub], ignore_index=True)
            data["accuracy_pct"] = data["accuracy"] * 100
            sparse = data[~data["is_dense"]]
            if not sparse.empty:
                sns.lineplot(
                    data=sparse,
                    x="eps",
                    y="accuracy_pct",
                    hue="label",
                    style="sparsity_pct",
                    hue_order=labels,
                    style_order=sparsities,
                    palette=palette,
                    markers=markers,
                    dashes=False,
                    errorbar=None,
                    legend=False,
                    ax=ax,
                )
                for (label, _), g in sparse.groupby(["label", "sparsity_pct"]):
                    g = g.sort_values("eps")
                    ax.fill_between(
                        g["eps"], g["band_low"] * 100, g["band_high"] * 100, color=palette[label], alpha=0.12, lw=0
                    )
            for dense_label, dense in data[data["is_dense"]].groupby("label"):
                dense = dense.sort_values("eps")  # one line per dense model family (dense, dense-continued)
                ls = "--" if dense_label == "dense" else ":"
                ax.plot(dense["eps"], dense["accuracy_pct"], ls=ls, color=_DENSE_COLOR, lw=1.8)
                ax.fill_between(
                    dense["eps"],
                    dense["band_low"] * 100,
                    dense["band_high"] * 100,
                    color=_DENSE_COLOR,
                    alpha=0.08,
                    lw=0,
                )
            _eps_axis(ax, data)
            ax.set(title=series, xlabel=_EPS_XLABEL, ylabel="accuracy (%)", ylim=(0, 100))
        handles = _legend_handles(labels, palette, sparsities, markers, dense=bool(agg["is_dense"].any()))
        for control in sorted(set(agg.loc[agg["is_dense"], "label"]) - {"dense"}):
            handles.append(Line2D([], [], color=_DENSE_COLOR, ls=":", lw=1.8, label=control))
        fig.legend(handles=handles, loc="outside right upper", frameon=False)
        fig.suptitle("Robust accuracy vs eps (mean over seeds; bands: 95% intervals)")
    return fig


def accuracy_vs_eps_caption() -> str:
    """The report's caption of `fig_accuracy_vs_eps`."""
    return (
        "Accuracy under each attack as eps grows (eps 0: clean accuracy). Lines: mean over seeds per granularity "
        "(colour) and target sparsity (marker); dashed black: dense. Bands: 95% interval, the wider of the Wilson "
        f"interval on the test examples and the between-seed t-interval. {EPS_AXIS_WORDS}"
    )


def _sparse_and_dense(results: pd.DataFrame, what: str) -> pd.DataFrame:
    """The annotated table of one setting, checked to hold both sparse and dense models."""
    df = _one_setting(annotated(results), what)
    if df["is_dense"].all():
        raise NothingToPlot("no sparse models, so there is no change vs dense to show")
    if not df["is_dense"].any():
        raise NothingToPlot("no dense model, so there is no reference to compare the sparse models with")
    return df


def fig_delta_heatmap(
    results: pd.DataFrame,
    outcomes: pd.DataFrame | None = None,
    *,
    meta: pd.DataFrame | None = None,
    eps: float | str | None = None,
    alpha: float = 0.05,
    correction: str = "holm",
) -> Figure:
    """Heatmap of target sparsity x granularity: change in robust accuracy vs dense, one panel per attack.

    Cells show the mean over seeds of each sparse model's accuracy minus its dense model's
    (percentage points); '*' marks cells where McNemar's exact test on the per-example outcomes
    (discordant pairs pooled over seeds), adjusted by `correction` over the setting's tests
    (`stats.adjust_p_values`), gives p < alpha.

    Args:
        results: Results table of one setting.
        outcomes: Per-example outcomes (without them no cell is marked).
        meta: Per-model metadata (pairs each sparse model with its parent).
        eps: The eps to show (default: see `labels.choose_eps`).
        alpha: Significance level for the marks.
        correction: "holm" (default), "bh" or "none".

    Raises:
        NothingToPlot: If there are no sparse or no dense models, or no attack at `eps`.
    """
    df = _sparse_and_dense(results, "fig_delta_heatmap")
    e = choose_eps(df, eps)
    grid = grid_deltas(model_deltas(df, outcomes, meta, correction=correction), correction=correction)
    at = grid[grid["bounded"] & np.isclose(grid["eps_key"], e, rtol=1e-6, atol=1e-9)]
    at = at[at["delta_pp"].notna()]
    if at.empty:
        raise NothingToPlot(f"no sparse model was attacked at eps {eps_text(e)} with a dense counterpart")
    label_eps = eps_label_of(df, e)
    series_list = list(dict.fromkeys(at["series"]))
    limit = max(1.0, float(np.ceil(at["delta_pp"].abs().max())))
    with _style():
        fig, axes = _new_figure(len(series_list), width=4.2, height=3.4)
        for ax, series in zip(axes, series_list):
            sub = at[at["series"] == series]
            rows = [sparsity_text(t) for t in sorted(sub["target_sparsity"].unique())]
            cols = sorted(sub["label"].unique())

            def cells(values: str, sub=sub, rows=rows, cols=cols) -> pd.DataFrame:
                table = sub.pivot(index="sparsity_pct", columns="label", values=values)
                return table.reindex(index=rows, columns=cols)

            delta, pval = cells("delta_pp"), cells("p_adjusted")
            text = np.where(
                np.isfinite(delta.to_numpy()),
                [
                    [f"{d:+.1f}" + ("*" if np.isfinite(p) and p < alpha else "") for d, p in zip(dr, pr)]
                    for dr, pr in zip(delta.to_numpy(), pval.to_numpy())
                ],
                "",
            )
            with warnings.catch_warnings():
                # seaborn 0.13 calls Colormap.set_bad, which matplotlib 3.11 marks as pending deprecation
                warnings.filterwarnings("ignore", message="The set_bad function", category=PendingDeprecationWarning)
                sns.heatmap(
                    delta,
                    ax=ax,
                    cmap="RdBu",
                    center=0.0,
                    vmin=-limit,
                    vmax=limit,
                    annot=text,
                    fmt="",
                    cbar=False,
                    linewidths=0.5,
                    linecolor="white",
                    square=False,
                )
            ax.set(title=f"{series} at eps {label_eps}", xlabel="granularity", ylabel="target sparsity")
            ax.tick_params(axis="y", rotation=0)
        fig.colorbar(axes[0].collections[0], ax=axes, label="robust accuracy vs dense (points)", shrink=0.9)
        adjusted = {"holm": "Holm-adjusted ", "bh": "BH-adjusted "}.get(correction, "")
        fig.suptitle(f"Change in robust accuracy vs dense at eps {label_eps}  (* {adjusted}McNemar p < {alpha:g})")
    return fig


def delta_heatmap_caption(alpha: float, correction: str = "holm") -> str:
    """The report's caption of `fig_delta_heatmap` (`correction`: see `stats.adjust_p_values`)."""
    return (
        "Mean over seeds of each sparse model's accuracy minus its dense counterpart's, in percentage points "
        f"(blue: more robust than dense, red: less). * marks McNemar's exact test p < {alpha:g} on the same test "
        f"examples (discordant pairs pooled over seeds), {correction_words(correction)}."
    )


def fig_delta_vs_eps(results: pd.DataFrame, *, meta: pd.DataFrame | None = None) -> Figure:
    """Change in accuracy vs dense against eps, one panel per attack, one line per granularity x sparsity.

    Each point is the mean over seeds of each sparse model's accuracy minus its dense model's
    (percentage points, as in `tables.grid_deltas`); each line starts at eps 0 with the change in
    clean accuracy. The dashed black line at 0 is the dense reference: below it, less robust.
    The eps axis is spaced as in `fig_accuracy_vs_eps`.

    Args:
        results: Results table of one setting (e.g. one target sparsity, to compare granularities).
        meta: Per-model metadata (pairs each sparse model with its parent).

    Returns:
        The figure: one axes per attack configuration with an eps budget.

    Raises:
        NothingToPlot: If there are no sparse or no dense models, or no attack with an eps budget
            has a change vs dense.

    Example:
        >>> fig = fig_delta_vs_eps(results[results["target_sparsity"].isin([0.0, 0.7])])  # doctest: +SKIP
    """
    df = _sparse_and_dense(results, "fig_delta_vs_eps")
    grid = grid_deltas(model_deltas(df, None, meta))
    grid = grid[grid["delta_pp"].notna()].assign(eps=grid["eps_key"])
    bounded, clean, series_list = _eps_curves(grid, "no attack with an eps budget has a change vs dense")
    labels, sparsities, palette, markers = _family_styles(df)
    family = ["label", "sparsity_pct"]
    with _style():
        fig, axes = _new_figure(len(series_list), width=4.4, height=3.6)
        for ax, series in zip(axes, series_list):
            sub = bounded[bounded["series"] == series]
            # the clean point of exactly the families this attack has, so every line starts at eps 0
            start = clean[pd.MultiIndex.from_frame(clean[family]).isin(pd.MultiIndex.from_frame(sub[family]))]
            data = pd.concat([start, sub], ignore_index=True)
            sns.lineplot(
                data=data,
                x="eps",
                y="delta_pp",
                hue="label",
                style="sparsity_pct",
                hue_order=labels,
                style_order=sparsities,
                palette=palette,
                markers=markers,
                dashes=False,
                errorbar=None,
                legend=False,
                ax=ax,
            )
            ax.axhline(0.0, ls="--", color=_DENSE_COLOR, lw=1.8, zorder=1.5)  # under lines lying on it
            _eps_axis(ax, data)
            ax.set(title=series, xlabel=_EPS_XLABEL, ylabel="accuracy vs dense (points)")
        fig.legend(
            handles=_legend_handles(labels, palette, sparsities, markers, dense=True),
            loc="outside right upper",
            frameon=False,
        )
        level = f" at {sparsities[0]} sparsity" if len(sparsities) == 1 else ""
        fig.suptitle(f"Change in accuracy vs dense against eps{level} (mean over seeds; dashed: dense)")
    return fig


def delta_vs_eps_caption() -> str:
    """The report's caption of `fig_delta_vs_eps`."""
    return (
        "Mean over seeds of each sparse model's accuracy minus its dense counterpart's, in percentage points, "
        "under each attack as eps grows (eps 0: the change in clean accuracy). Lines: granularity (colour) and "
        f"target sparsity (marker); dashed black at 0: dense (below it: less robust than dense). {EPS_AXIS_WORDS}"
    )


def _pareto_line(ax: Axes, data: pd.DataFrame, x: str, y: str, front: str) -> None:
    pts = data[data[front]].sort_values([x, y], ascending=[True, False])
    if len(pts):
        ax.plot(pts[x], pts[y], color="0.2", ls=":", lw=1.2, marker=None, label="Pareto front")


def fig_clean_vs_robust(
    results: pd.DataFrame,
    meta: pd.DataFrame | None = None,
    *,
    eps: float | str | None = None,
    outcomes: pd.DataFrame | None = None,
) -> Figure:
    """Clean vs robust accuracy of every model, sized by compression, and compression vs robust accuracy.

    Robust accuracy is each model's worst case over the eps-budget attacks at `eps`, per example
    when `outcomes` are given (see `tables.robust_vs_clean`).
    Left panel: clean vs robust accuracy (point size: compression); right panel: compression
    (total / non-zero weights, log scale) vs robust accuracy. Each panel draws its Pareto front
    (dotted) over the models of the run.

    Args:
        results: Results table of one setting.
        meta: Per-model metadata (for compression; without it 1 / (1 - achieved sparsity)).
        eps: The eps to use (default: see `labels.choose_eps`).
        outcomes: Per-example outcomes (the per-example worst case; without them the lowest
            single-attack accuracy).

    Raises:
        NothingToPlot: If no model was attacked at `eps`.
    """
    df = _one_setting(annotated(results), "fig_clean_vs_robust")
    e = choose_eps(df, eps)
    data = robust_vs_clean(df, meta, eps=e, outcomes=outcomes).dropna(subset=["clean_accuracy", "robust_accuracy"])
    if data.empty:
        raise NothingToPlot(f"no model has both clean accuracy and an attack at eps {eps_text(e)}")
    data = data.assign(clean_pct=data["clean_accuracy"] * 100, robust_pct=data["robust_accuracy"] * 100)
    labels, sparsities, palette, markers = _family_styles(df)
    label_eps = eps_label_of(df, e)
    sparse, dense = data[~data["is_dense"]], data[data["is_dense"]]
    with _style():
        fig, (ax_clean, ax_comp) = _new_figure(2, width=5.0, height=4.0)
        if not sparse.empty:
            sns.scatterplot(
                data=sparse,
                x="clean_pct",
                y="robust_pct",
                hue="label",
                hue_order=labels,
                palette=palette,
                size="compression",
                sizes=(40, 260),
                alpha=0.85,
                edgecolor="white",
                legend=False,
                ax=ax_clean,
            )
            sns.scatterplot(
                data=sparse,
                x="compression",
                y="robust_pct",
                hue="label",
                hue_order=labels,
                palette=palette,
                style="sparsity_pct",
                style_order=sparsities,
                markers=markers,
                s=80,
                alpha=0.85,
                legend=False,
                ax=ax_comp,
            )
        for ax, x in ((ax_clean, "clean_pct"), (ax_comp, "compression")):
            if not dense.empty:
                # drawn last and on top: a sparse model with the same numbers must not hide the reference
                ax.scatter(
                    dense[x], dense["robust_pct"], marker="*", s=220, color=_DENSE_COLOR, edgecolor="white", zorder=4
                )
        _pareto_line(ax_clean, data, "clean_pct", "robust_pct", "front_clean_robust")
        _pareto_line(ax_comp, data, "compression", "robust_pct", "front_compression_robust")
        ax_clean.set(
            xlabel="clean accuracy (%)",
            ylabel=f"robust accuracy at eps {label_eps} (%)",
            title="Clean vs robust (point size: compression)",
        )
        ax_comp.set_xscale("log")
        ticks = np.unique(np.round(data["compression"].to_numpy(dtype=float), 2))
        if len(ticks) <= 8:
            ax_comp.set_xticks(ticks, [f"{t:.3g}x" for t in ticks])
            ax_comp.minorticks_off()
        ax_comp.set(
            xlabel="compression (total / non-zero weights, log scale)",
            ylabel=f"robust accuracy at eps {label_eps} (%)",
            title="Robustness vs compression",
        )
        handles = _legend_handles(labels, palette, sparsities, markers, dense=False)
        if not dense.empty:
            handles.append(Line2D([], [], color=_DENSE_COLOR, marker="*", ms=12, ls="", label="dense"))
        handles.append(Line2D([], [], color="0.2", ls=":", lw=1.2, label="Pareto front"))
        fig.legend(handles=handles, loc="outside right upper", frameon=False)
        fig.suptitle(f"Every model: worst-case robust accuracy at eps {label_eps}")
    return fig


def clean_vs_robust_caption(eps_label: str) -> str:
    """The report's caption of `fig_clean_vs_robust` at eps `eps_label`."""
    return (
        f"One point per model. Robust accuracy: the worst case over the eps-budget attacks at eps {eps_label}, per "
        "example (robust only if every attack failed on it). "
        "Compression: total / non-zero weights. Dotted: Pareto front (no other model is better on both axes)."
    )


def fig_layer_sparsity(layer_sparsity: pd.DataFrame, models: pd.DataFrame) -> Figure:
    """Per-layer sparsity of the sparse models, one panel per target sparsity, one line per granularity.

    Values are averaged over seeds; the dotted line is the target.

    Args:
        layer_sparsity: Concatenated layer_sparsity.csv files (see `load_layer_sparsity`).
        models: One row per model with model_id, method, granularity, target_sparsity (meta or results;
            an annotated results table also brings its `label`).

    Raises:
        NothingToPlot: If no sparse model has per-layer sparsity.
    """
    keep = ["model_id", "method", "granularity", "target_sparsity"] + (["label"] if "label" in models.columns else [])
    info = models.drop_duplicates("model_id")[keep].copy()
    if {"dataset", "arch"} <= set(models.columns):
        settings = list(dict.fromkeys(models["dataset"].astype(str) + " / " + models["arch"].astype(str)))
        if len(settings) > 1:
            raise ReportError(f"fig_layer_sparsity: models hold {len(settings)} settings {settings}; filter to one")
    method, granularity = info["method"].astype(str).str.lower(), info["granularity"].astype(str).str.lower()
    info = info[(method != "dense") & (granularity != "dense")]
    layers = layer_sparsity.rename(columns={"granularity": "layer_granularity"}).merge(info, on="model_id", how="inner")
    if layers.empty:
        raise NothingToPlot("no sparse model has a layer_sparsity.csv, so there is no per-layer view")
    if "label" not in layers.columns:  # plain meta: name families as `labels.annotate` does
        several = info["method"].nunique() > 1
        layers["label"] = (layers["method"] + "/" + layers["granularity"]) if several else layers["granularity"]
    layers["target_sparsity"] = pd.to_numeric(layers["target_sparsity"])
    is_total = layers["kind"] == LAYER_TOTAL_KIND
    mean = (
        layers[~is_total]
        .groupby(["target_sparsity", "label", "layer_index"], as_index=False)
        .agg(name=("name", "first"), sparsity=("sparsity", "mean"))
    )
    mean["sparsity_pct"] = mean["sparsity"] * 100
    # the totals (over the prunable weights, over all weights) are not layers: drawn apart, never joined to them
    totals = layers[is_total].groupby(["target_sparsity", "label", "name"], as_index=False)["sparsity"].mean()
    names = layers[~is_total].drop_duplicates("layer_index").set_index("layer_index")["name"].sort_index()
    total_names = [n for n in _TOTAL_NAMES if n in set(totals["name"])]
    total_x = {n: len(names) + 1 + i for i, n in enumerate(total_names)}  # one empty slot after the last layer
    targets = sorted(mean["target_sparsity"].unique())
    labels = sorted(mean["label"].unique())
    palette = _palette(labels)
    # a marker per granularity too, so that lines lying on top of each other stay visible
    markers = {lab: _MARKERS[i % len(_MARKERS)] for i, lab in enumerate(labels)}
    width = max(4.6, 0.28 * (len(names) + len(total_x)) + 2.0)
    with _style():
        fig, axes = _new_figure(len(targets), width=width, height=3.6, ncols_max=2)
        for ax, target in zip(axes, targets):
            sub = mean[mean["target_sparsity"] == target]
            sns.lineplot(
                data=sub,
                x="layer_index",
                y="sparsity_pct",
                hue="label",
                hue_order=labels,
                palette=palette,
                style="label",
                style_order=labels,
                markers=markers,
                dashes=False,
                errorbar=None,
                legend=False,
                ax=ax,
            )
            for lab in labels:
                tot = totals[(totals["target_sparsity"] == target) & (totals["label"] == lab)]
                if len(tot):
                    ax.plot(
                        tot["name"].map(total_x),
                        tot["sparsity"] * 100,
                        ls="none",
                        marker=markers[lab],
                        color=palette[lab],
                        markersize=7,
                        gid=f"total:{lab}",
                    )
            if total_x:
                ax.axvline(len(names), color="0.75", lw=1)
            ax.axhline(target * 100, ls=":", color="0.4", lw=1.2)
            step = max(1, len(names) // 40)  # keep tick labels readable on deep networks
            ticks = list(names.index[::step]) + list(total_x.values())
            ax.set_xticks(ticks)
            ax.set_xticklabels(
                list(names.to_numpy()[::step]) + [_TOTAL_NAMES[n] for n in total_x], rotation=90, fontsize=7
            )
            ax.set(title=f"target {sparsity_text(target)}", xlabel="layer", ylabel="sparsity (%)", ylim=(-2, 102))
        handles = [Line2D([], [], color=palette[lab], marker=markers[lab], lw=2, label=lab) for lab in labels]
        handles.append(Line2D([], [], color="0.4", ls=":", label="target"))
        fig.legend(handles=handles, loc="outside right upper", frameon=False)
        fig.suptitle("Per-layer sparsity of the sparse models (mean over seeds)")
    return fig


def layer_sparsity_caption() -> str:
    """The report's caption of `fig_layer_sparsity`."""
    return (
        "Fraction of zero weights per layer (mean over seeds), one panel per target sparsity; dotted: the target. "
        "Right of the grey line, unconnected: the totals over the prunable weights and over all weights."
    )


def _norm_column(sub: pd.DataFrame) -> tuple[str, str]:
    norms = set(sub["norm"].astype(str).str.lower())
    if norms == {"linf"} and sub["linf_max"].notna().any():
        return "linf_max", "largest Linf perturbation"
    # the attacks package computes l2_median over the fooled examples only
    return "l2_median", "median L2 perturbation (fooled examples)"


def fig_attack_success(results: pd.DataFrame, *, eps: float | str | None = None) -> Figure:
    """Attack success rate per attack at one eps, and perturbation norms of minimum-norm attacks.

    Success rate is the fraction of clean-correct examples the attack fools. Bars are sparse
    models by target sparsity and granularity (mean over seeds, error bar: seed sd); the dashed
    line is the dense mean. Minimum-norm attacks (CW, DeepFool, FAB) get a panel of their
    perturbation norm instead (larger means harder to fool).

    Args:
        results: Results table of one setting.
        eps: The eps for the success-rate panels (default: see `labels.choose_eps`).

    Raises:
        NothingToPlot: If there is no attack row at all.
    """
    df = _one_setting(annotated(results), "fig_attack_success")
    panels: list[tuple[str, pd.DataFrame, str, str]] = []
    bounded = df[df["bounded"]]
    label_eps = ""
    if not bounded.empty:
        e = choose_eps(df, eps)
        label_eps = eps_label_of(df, e)
        at = bounded[np.isclose(bounded["eps"], e, rtol=1e-6, atol=1e-9)]
        for series in dict.fromkeys(at["series"]):
            title = f"{series} at eps {label_eps}"
            panels.append((title, at[at["series"] == series], "attack_success_rate", "attack success rate (%)"))
    for series in dict.fromkeys(df.loc[df["min_norm"], "series"]):
        sub = df[df["min_norm"] & (df["series"] == series)]
        col, what = _norm_column(sub)
        if sub[col].notna().any():
            panels.append((f"{series} (minimum-norm)", sub, col, what))
    if not panels:
        raise NothingToPlot("no attack results with a success rate or a perturbation norm")
    labels, sparsities = _sparse_labels(df), _sparsity_order(df)
    palette = _palette(labels)
    with _style():
        fig, axes = _new_figure(len(panels), width=4.4, height=3.4)
        for ax, (title, sub, col, ylabel) in zip(axes, panels):
            scale = 100.0 if col == "attack_success_rate" else 1.0
            sub = sub.assign(value=pd.to_numeric(sub[col], errors="coerce") * scale)
            sparse = sub[~sub["is_dense"]]
            if not sparse.empty:
                sns.barplot(
                    data=sparse,
                    x="sparsity_pct",
                    y="value",
                    hue="label",
                    order=sparsities,
                    hue_order=labels,
                    palette=palette,
                    errorbar="sd",
                    legend=False,
                    ax=ax,
                )
            dense = sub.loc[sub["is_dense"], "value"]
            if dense.notna().any():
                ax.axhline(float(dense.mean()), ls="--", color=_DENSE_COLOR, lw=1.6)
            ax.set(title=title, xlabel="target sparsity", ylabel=ylabel)
            if col == "attack_success_rate":
                ax.set_ylim(0, 100)
        handles = [Line2D([], [], color=palette[lab], lw=6, label=lab) for lab in labels]
        if df["is_dense"].any():
            handles.append(Line2D([], [], color=_DENSE_COLOR, ls="--", lw=1.6, label="dense"))
        fig.legend(handles=handles, loc="outside right upper", frameon=False)
        fig.suptitle("Attack success rate" + (f" at eps {label_eps}" if label_eps else "") + " and perturbation norms")
    return fig


def fig_accuracy_vs_norm(results: pd.DataFrame, outcomes: pd.DataFrame) -> Figure:
    """Robust accuracy against the perturbation-norm threshold, from minimum-norm attacks' per-example norms.

    At threshold ``t`` an example counts as robust when the model classifies it correctly on
    clean input and the attack needed a perturbation larger than ``t`` (or never fooled it):
    ``clean_correct & ~(perturbation_norm <= t)``, over all examples. One panel per minimum-norm
    attack (results rows with ``eps_kind == "minimum_norm"``), one line per model.

    Args:
        results: Results table (``model_id``, ``key``, ``attack``, ``norm``, ``eps_kind``).
        outcomes: Per-example outcomes (``model_id``, ``key``, ``example``, ``correct``,
            ``perturbation_norm``), including each model's ``clean`` rows.

    Raises:
        NothingToPlot: If no minimum-norm attack was run or its outcomes hold no norm.
    """
    if "eps_kind" not in results.columns or "perturbation_norm" not in outcomes.columns:
        raise NothingToPlot("no eps_kind or perturbation_norm column: re-run the attack sweep")
    keys = results.loc[results["eps_kind"] == "minimum_norm", ["key", "attack", "norm"]].drop_duplicates("key")
    if keys.empty:
        raise NothingToPlot("no minimum-norm attack (eps = inf) in the results")
    clean = outcomes[outcomes["key"] == "clean"].set_index(["model_id", "example"])["correct"].astype(bool)
    with _style():
        fig, axes = _new_figure(len(keys), width=4.6, height=3.6)
        drawn = 0
        for ax, (_, spec) in zip(axes, keys.iterrows()):
            rows = outcomes[outcomes["key"] == spec["key"]]
            norms = pd.to_numeric(rows["perturbation_norm"], errors="coerce")
            if norms.notna().sum() == 0:
                ax.set_axis_off()
                continue
            grid = np.linspace(0.0, float(norms.max()) * 1.05, 200)
            for model_id, part in rows.groupby("model_id", sort=False):
                ok = clean.reindex(list(zip(part["model_id"], part["example"]))).fillna(False).to_numpy(bool)
                norm = pd.to_numeric(part["perturbation_norm"], errors="coerce").to_numpy(float)
                fooled_by = np.where(np.isnan(norm), np.inf, norm)
                accuracy = [(ok & ~(fooled_by <= t)).mean() * 100 for t in grid]
                ax.plot(grid, accuracy, lw=1.4, label=str(model_id))
            ax.set(
                title=str(spec["key"]), xlabel=f"{spec['norm']} threshold", ylabel="robust accuracy (%)", ylim=(0, 100)
            )
            drawn += 1
        if not drawn:
            raise NothingToPlot("the minimum-norm attacks' outcomes hold no perturbation norm")
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside right upper", frameon=False)
        fig.suptitle("Robust accuracy against the perturbation-norm threshold (minimum-norm attacks)")
    return fig


def accuracy_vs_norm_caption() -> str:
    """The report's caption of `fig_accuracy_vs_norm`."""
    return (
        "Robust accuracy against the perturbation-norm threshold: at each threshold, the share of all "
        "examples that the model classifies correctly and that the minimum-norm attack could not fool "
        "with a smaller perturbation. A curve further right means larger perturbations were needed."
    )


def attack_success_caption(eps_label: str) -> str:
    """The report's caption of `fig_attack_success` at eps `eps_label`."""
    return (
        f"Share of clean-correct examples the attack fools at eps {eps_label} (bars: mean over seeds, error bar: "
        "seed sd; dashed: dense). Minimum-norm attacks: size of the perturbations they need (larger is more "
        "robust)."
    )
