"""The report's content as data: findings, figures and tables, computed by `build`, rendered by `render`.

Kept apart from both so that neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

__all__ = ["Finding", "FigureItem", "TableItem", "ReportContent", "METHODS_SECTION"]


@dataclass(frozen=True)
class Finding:
    """One sentence of the first screen and the numbers it came from.

    Attributes:
        kind: What the sentence is about: "overview", "dense", "plain_control" (the dense model vs
            its plainly trained control), "sparsity", "ranking",
            "clean_cost", "sanity", "precision", "method" (how the numbers were computed), or, where
            several sparsification methods are compared, "methods", "methods_sparsity",
            "methods_budget" and "methods_note" (see `method_summary`); where methods meet at equal
            effective MACs, "compression" (one per MACs level) and "compression_method" (how they
            were compared; see `compression`).
        text: The sentence.
        numbers: The values the sentence states (raw, unrounded), by name.
    """

    kind: str
    text: str
    numbers: dict[str, Any] = field(default_factory=dict)


#: The report section of the methods side by side (only where a setting has several methods); "" is the main one.
METHODS_SECTION = "methods"


@dataclass
class FigureItem:
    """One figure of the report, already rendered to PNG bytes; `section` groups it on the page."""

    name: str
    title: str
    caption: str
    png: bytes
    section: str = ""


@dataclass
class TableItem:
    """One table: `data` (raw numbers) goes to tables/<name>.csv, `shown` (a column subset) onto the pages."""

    name: str
    title: str
    caption: str
    data: pd.DataFrame
    shown: pd.DataFrame | None = None
    collapsed: bool = False
    section: str = ""


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
    #: RobustBench-style record per model (`robustbench.robustbench_entries`), written as robustbench/<id>.json
    robustbench: dict[str, dict[str, Any]] = field(default_factory=dict)
