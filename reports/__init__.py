"""reports: from a finished run's results table and metadata to tables, figures, HTML and Markdown.

Reads only the files of a run directory (never models) and never imports robustsparse.

Example:
    >>> from reports import build_report
    >>> build_report("runs/digits-quick")  # doctest: +SKIP
    PosixPath('runs/digits-quick/report/index.html')
"""

from reports.build import build_report
from reports.content import Finding
from reports.contract import RESULT_COLUMNS, validate_results
from reports.errors import NothingToPlot, ReportError
from reports.figures import (
    fig_accuracy_vs_eps,
    fig_attack_success,
    fig_clean_vs_robust,
    fig_delta_heatmap,
    fig_delta_vs_eps,
    fig_layer_sparsity,
    try_figure,
)
from reports.load import (
    RunConfigFile,
    find_run_dir,
    load_layer_sparsity,
    load_meta,
    load_outcomes,
    load_results,
    load_sanity,
    read_run_config_file,
)
from reports.summary import summarize
from reports.tables import paired_outcomes, paired_table, paired_test

__all__ = [
    "build_report",
    "find_run_dir",
    "load_results",
    "load_outcomes",
    "load_meta",
    "load_layer_sparsity",
    "load_sanity",
    "read_run_config_file",
    "RunConfigFile",
    "RESULT_COLUMNS",
    "validate_results",
    "ReportError",
    "NothingToPlot",
    "Finding",
    "summarize",
    "paired_outcomes",
    "paired_table",
    "paired_test",
    "try_figure",
    "fig_accuracy_vs_eps",
    "fig_delta_heatmap",
    "fig_delta_vs_eps",
    "fig_clean_vs_robust",
    "fig_layer_sparsity",
    "fig_attack_success",
]
