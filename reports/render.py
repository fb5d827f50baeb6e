"""Turn computed report content into text: formatted tables, the HTML page and the Markdown page.

No file I/O here; `build` writes what these functions return.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import jinja2
import numpy as np
import pandas as pd
from markupsafe import Markup

from reports.content import METHODS_SECTION, ReportContent
from reports.labels import format_p

__all__ = ["display_table", "html_table", "markdown_table", "render_html", "render_markdown"]

_PERCENT = {
    "accuracy",
    "ci_low",
    "ci_high",
    "dense_accuracy",
    "attack_success_rate",
    "clean_accuracy",
    "robust_accuracy",
    "clean_acc",
    "achieved_sparsity",
    "achieved_sparsity_all",
    "target_sparsity",
    "band_low",
    "band_high",
    "success_ci_low",
    "success_ci_high",
    "macs_fraction",
    "level_achieved",
    "best_accuracy",
    "other_accuracy",
}
_POINTS = {"delta_pp", "delta_low_pp", "delta_high_pp", "off_level_pp", "off_target_pp"}
_RENAME = {
    "label": "granularity",
    "sparsity_pct": "sparsity",
    "series": "attack",
    "eps_label": "eps",
    "delta_pp": "change (points)",
    "delta_sd": "sd over seeds",
    "p_value": "McNemar p",
    "p_adjusted": "adjusted p",
    "delta_low_pp": "95% CI low (points)",
    "delta_high_pp": "95% CI high (points)",
    "success_ci_low": "success 95% CI low",
    "success_ci_high": "success 95% CI high",
    "sparse_only": "only sparse right",
    "dense_only": "only dense right",
    "n_seeds": "seeds",
    "dense_accuracy": "dense accuracy",
    "attack_success_rate": "success rate",
    "ci_low": "95% CI low",
    "ci_high": "95% CI high",
    "n_examples": "examples",
    "n_correct": "correct",
    "accuracy_sd": "sd over seeds (points)",
    "band_low": "95% band low",
    "band_high": "95% band high",
    "macs_fraction": "effective MACs (of dense)",
    "off_level_pp": "vs level median (points)",
    "matched": "equal sparsity",
    "total_epochs": "total epochs",
    "best_only": "only best right",
    "other_only": "only other right",
    "n_paired": "paired examples",
    "best_accuracy": "best accuracy",
    "other_accuracy": "other accuracy",
}


def _fmt_percent(x: Any) -> str:
    return "" if pd.isna(x) else f"{float(x) * 100:.1f}%"


def _fmt_points(x: Any) -> str:
    return "" if pd.isna(x) else f"{float(x):+.1f}"


def _fmt_p(x: Any) -> str:
    return "" if pd.isna(x) else format_p(float(x)).removeprefix("p=").replace("p<", "<")


def _fmt_number(x: Any) -> str:
    if pd.isna(x):
        return ""
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)) or (isinstance(x, float) and x.is_integer() and abs(x) < 1e15):
        return f"{int(x)}"
    if isinstance(x, (float, np.floating)):
        return f"{x:.4g}"
    return str(x)


def _formatter(col: str) -> Callable[[Any], str]:
    if col in _PERCENT:
        return _fmt_percent
    if col in _POINTS:
        return _fmt_points
    if col == "delta_sd":
        return lambda x: "" if pd.isna(x) else f"{float(x):.1f}"
    if col == "accuracy_sd":
        return lambda x: "" if pd.isna(x) else f"{float(x) * 100:.1f}"
    if col in ("p_value", "p_adjusted"):
        return _fmt_p
    if col == "compression":
        return lambda x: "" if pd.isna(x) else f"{float(x):.2f}x"
    return _fmt_number


def display_table(df: pd.DataFrame) -> pd.DataFrame:
    """Format a raw table for reading: fractions as percentages, deltas signed, p-values in words.

    Args:
        df: A table from `reports.tables` (raw numbers).

    Returns:
        A table of strings with reader-facing column names.
    """
    out = pd.DataFrame({col: [_formatter(col)(v) for v in df[col]] for col in df.columns}, index=df.index)
    return out.rename(columns=_RENAME)


def html_table(df: pd.DataFrame, *, text: bool = False) -> Markup:
    """A formatted table as escaped HTML (safe to insert into the page); `text` aligns cells left."""
    classes = "data text" if text else "data"
    html = display_table(df).to_html(index=False, border=0, classes=classes, escape=True, na_rep="")
    return Markup(html)


def markdown_table(df: pd.DataFrame) -> str:
    """A formatted table as a GitHub-flavoured Markdown table."""
    shown = display_table(df)

    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in shown.columns) + " |", "|" + "---|" * len(shown.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in shown.itertuples(index=False)]
    return "\n".join(lines)


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("reports", "templates"),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default_for_string=False),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _sections(items: list, section: str) -> list:
    return [item for item in items if item.section == section]


def render_html(content: ReportContent) -> str:
    """The self-contained HTML page: figures embedded as base64 PNG, inline style, no script, no links out.

    Figures and tables of the methods section (`content.METHODS_SECTION`) get a section of their
    own after the findings; a run without them has no such section.
    """

    def figures(section: str) -> list[dict[str, str]]:
        return [
            {
                "name": f.name,
                "title": f.title,
                "caption": f.caption,
                "src": "data:image/png;base64," + base64.b64encode(f.png).decode("ascii"),
            }
            for f in _sections(content.figures, section)
        ]

    def tables(section: str) -> list[dict[str, Any]]:
        return [
            {
                "name": t.name,
                "title": t.title,
                "caption": t.caption,
                "collapsed": t.collapsed,
                "rows": 0 if t.shown is None else len(t.shown),
                "html": None if t.shown is None else html_table(t.shown),
            }
            for t in _sections(content.tables, section)
        ]

    return (
        _environment()
        .get_template("report.html.j2")
        .render(
            title=content.title,
            findings=content.findings,
            notes=content.notes,
            method_figures=figures(METHODS_SECTION),
            method_tables=tables(METHODS_SECTION),
            figures=figures(""),
            tables=tables(""),
            metadata=html_table(content.metadata, text=True),
            config_text=content.config_text,
        )
    )


def render_markdown(content: ReportContent) -> str:
    """The Markdown page: same order as the HTML page, figures linked from figures/, tables inline or as CSV links."""

    def tables(section: str) -> list[dict[str, Any]]:
        return [
            {
                "name": t.name,
                "title": t.title,
                "caption": t.caption,
                "markdown": markdown_table(t.shown) if (t.shown is not None and not t.collapsed) else None,
            }
            for t in _sections(content.tables, section)
        ]

    return (
        _environment()
        .get_template("report.md.j2")
        .render(
            title=content.title,
            findings=content.findings,
            notes=content.notes,
            method_figures=_sections(content.figures, METHODS_SECTION),
            method_tables=tables(METHODS_SECTION),
            figures=_sections(content.figures, ""),
            tables=tables(""),
            metadata=markdown_table(content.metadata),
            config_text=content.config_text,
        )
    )
