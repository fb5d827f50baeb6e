"""Robust accuracy on the common compression axis: effective MACs and parameters as fractions of dense.

Every method (sparse, low-rank or other) on the same axes, one colour per method (as in
`method_figures`), one marker per granularity, the dense model as the reference (a black star at
100% and a dashed line at its robust accuracy). DataFrames in, a Figure out, no file I/O.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from reports.compression import MACS_TOLERANCE, compression_families, compression_points, compression_words
from reports.errors import NothingToPlot
from reports.figures import _DENSE_COLOR, _MARKERS, _new_figure, _one_setting, _style
from reports.labels import choose_eps, eps_label_of, eps_text
from reports.method_figures import method_colors
from reports.tables import annotated

__all__ = ["fig_compression_axis", "compression_axis_caption"]

_PANELS = [
    ("macs_fraction", "effective MACs (% of dense)", "Robust accuracy vs compute"),
    ("params_fraction", "non-zero parameters (% of dense)", "Robust accuracy vs parameters"),
]


def fig_compression_axis(
    results: pd.DataFrame,
    meta: pd.DataFrame | None = None,
    *,
    eps: float | str | None = None,
    outcomes: pd.DataFrame | None = None,
) -> Figure:
    """Worst-case robust accuracy at `eps` against effective MACs and against parameters, every method together.

    Each point is a family (a model less its seed: pooled over seeds, with its 95% Wilson interval
    as an error bar) at its mean MACs / parameter fraction of the setting's dense model; the
    families of one method and granularity are joined from the cheapest up. Dense models are stars
    (filled: the dense model; hollow: another dense model such as a dense control or the dense
    model with mixture normalisation), and a dashed line marks the dense model's robust accuracy.

    Raises:
        NothingToPlot: No non-dense model with known MACs or parameters and a robust accuracy at `eps`.
    """
    df = _one_setting(annotated(results), "fig_compression_axis")
    e = choose_eps(df, eps)
    families = compression_families(compression_points(df, meta, eps=e, outcomes=outcomes))
    compressed = families[~families["is_dense"].astype(bool)]
    panels = [p for p in _PANELS if compressed[p[0]].notna().any()]
    if compressed.empty or not panels:
        raise NothingToPlot(
            f"no compressed model has both known MACs or parameters (results.csv / meta.json) and an attack at eps {eps_text(e)}"
        )
    label_eps = eps_label_of(df, e)
    methods = sorted(compressed["method"].astype(str).unique())
    colors = method_colors(methods)
    granularities = sorted(compressed["granularity"].astype(str).unique())
    markers = {g: _MARKERS[i % len(_MARKERS)] for i, g in enumerate(granularities)}
    dense = families[families["is_dense"].astype(bool)]
    plain = dense[dense["method"].str.lower() == "dense"]
    with _style():
        fig, axes = _new_figure(len(panels), width=5.0, height=4.0)
        for ax, (x, xlabel, title) in zip(axes, panels):
            shown = compressed.dropna(subset=[x])
            for _label, g in shown.groupby("label", sort=True):
                g = g.sort_values(x)
                color = colors[str(g["method"].iloc[0])]
                marker = markers[str(g["granularity"].iloc[0])]
                acc = g["robust_accuracy"].to_numpy(float) * 100
                err = np.vstack(
                    [acc - g["robust_low"].to_numpy(float) * 100, g["robust_high"].to_numpy(float) * 100 - acc]
                )
                ax.errorbar(
                    g[x] * 100, acc, yerr=np.nan_to_num(err), color=color, marker=marker, ms=6, lw=1.4, capsize=2
                )
            for row in dense.dropna(subset=[x]).itertuples():
                is_plain = str(row.method).lower() == "dense"
                ax.scatter(
                    getattr(row, x) * 100,
                    row.robust_accuracy * 100,
                    marker="*",
                    s=200,
                    c=[_DENSE_COLOR if is_plain else "white"],
                    edgecolors=_DENSE_COLOR,
                    zorder=5 if is_plain else 4,  # the reference stays visible where another dense model sits on it
                )
                if not is_plain:  # several hollow stars may share x = 100%: name each
                    ax.annotate(
                        str(row.label),
                        (getattr(row, x) * 100, row.robust_accuracy * 100),
                        textcoords="offset points",
                        xytext=(-8, 6),
                        ha="right",
                        fontsize=7,
                        color="0.3",
                    )
            if len(plain):
                ax.axhline(plain["robust_accuracy"].mean() * 100, color=_DENSE_COLOR, ls="--", lw=1.0)
            ax.set(xlabel=xlabel, ylabel=f"robust accuracy at eps {label_eps} (%)", title=title, xlim=(0, 105))
        handles = [Line2D([], [], color=colors[m], lw=2.5, label=m) for m in methods]
        if len(markers) > 1:
            handles += [Line2D([], [], color="0.35", marker=mk, ls="", label=g) for g, mk in markers.items()]
        if len(plain):
            handles.append(Line2D([], [], color=_DENSE_COLOR, marker="*", ms=12, ls="--", label="dense"))
        for other in sorted(set(dense["label"]) - set(plain["label"])):
            handles.append(Line2D([], [], color=_DENSE_COLOR, mfc="white", marker="*", ms=12, ls="", label=other))
        fig.legend(handles=handles, loc="outside right upper", frameon=False)
        fig.suptitle(f"Every method on one compression axis: worst-case robust accuracy at eps {label_eps}")
    return fig


def compression_axis_caption(eps_label: str, tolerance: float = MACS_TOLERANCE) -> str:
    """The report's caption of `fig_compression_axis` at eps `eps_label`."""
    return (
        "One point per family (a model less its seed), colour: method, marker: granularity; x: effective MACs "
        "(left) and non-zero parameters (right) as a share of the dense model's, mean over seeds; y: the worst case "
        f"over the eps-budget attacks at eps {eps_label}, pooled over seeds, bars: 95% Wilson interval. Black star "
        "and dashed line: the dense model (hollow star: another dense model, e.g. the dense control or the dense "
        f"model with mixture normalisation). {compression_words(tolerance)}"
    )
