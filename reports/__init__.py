"""reports: from a finished run's results table and metadata to tables, figures, HTML and Markdown.

Reads only the files of a run directory (never models) and never imports robustsparse. Everything
a notebook needs is importable from here; the submodules are the implementation.

Example:
    >>> from reports import build_report
    >>> build_report("runs/digits-quick")  # doctest: +SKIP
    PosixPath('runs/digits-quick/report/index.html')
"""

from reports.build import build_report
from reports.content import Finding
from reports.contract import RESULT_COLUMNS, validate_results
from reports.errors import NothingToPlot, ReportError
from reports.explore import PairChoice, choose_pair, choose_sparsity, show
from reports.figures import (
    fig_accuracy_vs_eps,
    fig_attack_success,
    fig_clean_vs_robust,
    fig_delta_heatmap,
    fig_delta_vs_eps,
    fig_layer_sparsity,
    try_figure,
)
from reports.labels import annotate, choose_eps, eps_label_of, eps_text, format_p, settings_of, sparsity_text
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
from reports.method_figures import fig_method_heatmap, fig_method_pareto, fig_methods_vs_eps
from reports.methods import (
    SPARSITY_TOLERANCE,
    compares_methods,
    method_comparison,
    method_families,
    method_front,
    method_pairs,
    sparse_methods,
)
from reports.stats import CORRECTIONS
from reports.summary import summarize
from reports.tables import (
    aggregate_accuracy,
    check_outcomes,
    grid_deltas,
    model_deltas,
    model_table,
    paired_outcomes,
    paired_table,
    paired_test,
    robust_vs_clean,
    sanity_table,
)

__all__ = [
    # build and load
    "build_report",
    "CORRECTIONS",
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
    # labels and tables
    "annotate",
    "settings_of",
    "choose_eps",
    "eps_label_of",
    "eps_text",
    "sparsity_text",
    "format_p",
    "aggregate_accuracy",
    "check_outcomes",
    "model_deltas",
    "grid_deltas",
    "model_table",
    "robust_vs_clean",
    "sanity_table",
    "paired_outcomes",
    "paired_table",
    "paired_test",
    "Finding",
    "summarize",
    # figures and notebook helpers
    "try_figure",
    "show",
    "PairChoice",
    "choose_pair",
    "choose_sparsity",
    "fig_accuracy_vs_eps",
    "fig_delta_heatmap",
    "fig_delta_vs_eps",
    "fig_clean_vs_robust",
    "fig_layer_sparsity",
    "fig_attack_success",
    # sparsification methods side by side
    "SPARSITY_TOLERANCE",
    "sparse_methods",
    "compares_methods",
    "method_families",
    "method_comparison",
    "method_pairs",
    "method_front",
    "fig_methods_vs_eps",
    "fig_method_heatmap",
    "fig_method_pareto",
]
