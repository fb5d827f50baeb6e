"""The run folder's contract: every file name, every table's `{column: kind}`, every closed vocabulary.

The single source of truth. The pipeline (`robustsparse`) writes a run folder by these names and
columns; `reports` reads it back and checks it against the same tables. Column lists, validation
and dtype casting are all derived from the tables below; nothing else in the project spells a
run-folder file name or a column list.

Layout of a run folder::

    <run_dir>/config.yaml            the resolved experiment configuration
    <run_dir>/results.csv            RESULTS: one row per model x attack spec
    <run_dir>/outcomes.csv.gz        OUTCOMES: one row per model x attack spec x example
    <run_dir>/sanity.csv             SANITY: one row per model x sanity check
    <run_dir>/models/<model_id>/     model.pt, meta.json, train_log.csv, layer_sparsity.csv,
                                     eval/ (per-model caches of results, outcomes and sanity)
    <run_dir>/report/                index.html, report.md, figures/, tables/

Column kinds: ``"str"`` (text, empty when missing), ``"float"``, ``"int"`` (whole numbers; may be
empty, e.g. `steps` of the clean row) and ``"bool"`` (written True/False, read from 0/1,
true/false or yes/no).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

import pandas as pd

from reports.errors import ReportError

__all__ = [
    "LOWRANK_GRANULARITY",
    "CONFIG_FILE",
    "RESULTS_FILE",
    "OUTCOMES_FILE",
    "SANITY_FILE",
    "MODELS_DIR",
    "TENSORBOARD_DIR",
    "RESULTS_PARQUET_FILE",
    "REPORT_DIR",
    "CHECKPOINT_FILE",
    "META_FILE",
    "TRAIN_LOG_FILE",
    "LAYER_SPARSITY_FILE",
    "RESUME_STATE_FILE",
    "EVAL_DIR",
    "EPS_KINDS",
    "SANITY_STATUSES",
    "PLAIN_DENSE_METHOD",
    "CONTINUED_DENSE_METHOD",
    "Table",
    "RESULTS",
    "OUTCOMES",
    "SANITY",
    "LAYER_SPARSITY",
    "TRAIN_LOG",
    "LAYER_TOTAL_KIND",
    "LAYER_TOTAL_NAMES",
    "META_REQUIRED",
    "MODEL_COLUMNS",
    "MODEL_COST_COLUMNS",
    "RESULT_COLUMNS",
    "OUTCOME_COLUMNS",
    "SANITY_COLUMNS",
    "LAYER_SPARSITY_COLUMNS",
    "TRAIN_LOG_COLUMNS",
    "validate_columns",
    "validate_table",
    "validate_results",
    "cast_for_writing",
]

# ---- file and folder names --------------------------------------------------------------------
CONFIG_FILE = "config.yaml"
RESULTS_FILE = "results.csv"
OUTCOMES_FILE = "outcomes.csv.gz"
SANITY_FILE = "sanity.csv"
MODELS_DIR = "models"
REPORT_DIR = "report"
#: Inside report/: the results table as Parquet (`robustsparse report --parquet`).
RESULTS_PARQUET_FILE = "results.parquet"
#: Inside models/<model_id>/.
CHECKPOINT_FILE = "model.pt"
META_FILE = "meta.json"
TRAIN_LOG_FILE = "train_log.csv"
LAYER_SPARSITY_FILE = "layer_sparsity.csv"
#: Inside models/<model_id>/ with train.tensorboard: true: the training curves as TensorBoard event files.
TENSORBOARD_DIR = "tensorboard"
#: The trainer's resume state (weights, optimizer, pruner, log) after the last finished epoch.
RESUME_STATE_FILE = "last.pt"
#: Inside models/<model_id>/: the model's own results.csv, outcomes.csv.gz and sanity.csv (same names).
EVAL_DIR = "eval"

# ---- closed vocabularies ----------------------------------------------------------------------
#: `granularity` of a low-rank model (e.g. haloc's): a smaller factorised network, not a mask, so
#: its "achieved sparsity" is 0 and it is compared with sparse models on the compression axis (MACs).
LOWRANK_GRANULARITY = "lowrank"
#: `eps_kind` of results.csv: no attack, an attack inside an eps budget, or a minimum-norm attack
#: (which searches for the smallest perturbation; with a finite eps it is also held to that budget).
EPS_KINDS: tuple[str, ...] = ("clean", "bounded", "minimum_norm")
#: `status` of sanity.csv: a check that ran and held, ran and fired, or could not run (nothing to compare).
SANITY_STATUSES: tuple[str, ...] = ("passed", "failed", "not_run")

#: `method` of the plain dense control of an adversarially trained grid
#: (`train.adversarial.plain_dense_control`): the dense model trained without adversarial training.
PLAIN_DENSE_METHOD = "dense-plain"
#: `method` of the dense control of a fine-tuned grid: the dense model trained again from itself for
#: the sparse models' epochs (the equal-budget reference of a model fine-tuned from its dense parent).
CONTINUED_DENSE_METHOD = "dense-continued"

Kind = Literal["str", "float", "int", "bool"]

_TRUE = {"1", "true", "yes"}
_FALSE = {"0", "false", "no"}


@dataclass(frozen=True)
class Table:
    """One tabular file of the run folder.

    Attributes:
        file: Its file name.
        columns: Column -> kind, in the order the file has them.
        optional: Columns a reader accepts missing (filled empty); written whenever known.
        vocabularies: Column -> its allowed values.
        unique: Columns whose combination identifies a row.
    """

    file: str
    columns: Mapping[str, Kind]
    optional: frozenset[str] = frozenset()
    vocabularies: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    unique: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", MappingProxyType(dict(self.columns)))
        object.__setattr__(self, "vocabularies", MappingProxyType(dict(self.vocabularies)))

    @property
    def names(self) -> list[str]:
        """Every column, in file order."""
        return list(self.columns)

    @property
    def required(self) -> list[str]:
        """The columns a reader refuses to do without."""
        return [c for c in self.columns if c not in self.optional]


#: The model's identity columns that results.csv repeats from meta.json (one block per row).
MODEL_COLUMNS: dict[str, Kind] = {
    "model_id": "str",
    "arch": "str",
    "dataset": "str",
    "method": "str",
    "granularity": "str",
    "target_sparsity": "float",
    "achieved_sparsity": "float",
    "seed": "int",
}

#: The model's cost that results.csv repeats from meta.json (`robustsparse.sparsity.accounting.model_cost`),
#: the common axis of every method, sparse or not: parameters and multiply-accumulates of one example.
#: `params`: every parameter of the network as built (for a low-rank model: the factorised one);
#: `nonzero_params`: those that are not zero (masked weights count as zero); `dense_macs`: conv and
#: linear MACs counting every weight of the network as built; `effective_macs`: only the non-zero
#: weights' (what a kernel that skips zeros does). Optional: results.csv files written before they
#: existed read back with them empty (the report then takes them from meta.json).
MODEL_COST_COLUMNS: dict[str, Kind] = {
    "params": "int",
    "nonzero_params": "int",
    "dense_macs": "int",
    "effective_macs": "int",
}

#: Tidy results: one row per model x attack spec (x eps). Clean accuracy is attack="clean", eps=0.
RESULTS = Table(
    RESULTS_FILE,
    {
        **MODEL_COLUMNS,
        "key": "str",
        "attack": "str",
        "norm": "str",
        "eps": "float",
        "eps_label": "str",
        "eps_kind": "str",
        "steps": "int",
        "restarts": "int",
        "n_examples": "int",
        "n_correct": "int",
        "accuracy": "float",
        "ci_low": "float",
        "ci_high": "float",
        "n_clean_correct": "int",
        "attack_success_rate": "float",
        "linf_max": "float",
        "l2_mean": "float",
        "l2_median": "float",
        "elapsed_s": "float",
        "config_digest": "str",
        # torchattacks' randomised attacks draw per batch, so their results depend on it
        "batch_size": "int",
        # the grid settings besides granularity and target that set a model apart ("" when none)
        "variant": "str",
        **MODEL_COST_COLUMNS,
    },
    optional=frozenset({"variant", *MODEL_COST_COLUMNS}),
    vocabularies={"eps_kind": EPS_KINDS},
    unique=("model_id", "key"),
)

#: Per-example outcomes: one row per model x attack key x example.
OUTCOMES = Table(
    OUTCOMES_FILE,
    {"model_id": "str", "key": "str", "example": "int", "correct": "bool", "perturbation_norm": "float"},
    unique=("model_id", "key", "example"),
)

#: Sanity checks of every model, with the numbers behind each status.
SANITY = Table(
    SANITY_FILE,
    {"model_id": "str", "check": "str", "status": "str", "evidence": "str"},
    vocabularies={"status": SANITY_STATUSES},
)

#: `kind` of the two rows that close every layer_sparsity.csv: totals, not layers.
LAYER_TOTAL_KIND = "total"
#: Their names: over the prunable weights, over all weights.
LAYER_TOTAL_NAMES: tuple[str, ...] = ("__prunable__", "__all__")

#: Per-layer sparsity of one model (models/<model_id>/layer_sparsity.csv): one row per conv/linear
#: weight (`kind` says which), then the `LAYER_TOTAL_NAMES` rows (`kind` = LAYER_TOTAL_KIND).
LAYER_SPARSITY = Table(
    LAYER_SPARSITY_FILE,
    {
        "name": "str",
        "kind": "str",
        "shape": "str",
        "granularity": "str",
        "group": "str",  # what one pruned group is on that layer, e.g. "3x3 kernel", "8 input channels"
        "prunable": "bool",
        "weights": "int",
        "nonzeros": "int",
        "sparsity": "float",
        "structure_ok": "bool",
        "why": "str",
    },
    optional=frozenset({"why", "group"}),
)

#: The training curves of one model (models/<model_id>/train_log.csv): one row per epoch, written by
#: the trainer after every epoch. `adversarial_seconds` is the part of `epoch_seconds` spent crafting
#: adversarial training examples (0 without adversarial training); logs written before it existed lack it.
TRAIN_LOG = Table(
    TRAIN_LOG_FILE,
    {
        "epoch": "int",
        "lr": "float",
        "train_loss": "float",
        "train_acc": "float",
        "test_loss": "float",
        "test_acc": "float",
        "target_sparsity": "float",
        "achieved_sparsity": "float",
        "masks_frozen": "bool",
        "epoch_seconds": "float",
        "adversarial_seconds": "float",
    },
    optional=frozenset({"adversarial_seconds"}),
)

#: Fields every meta.json must carry for the report to place the model; the rest are optional.
META_REQUIRED: list[str] = ["model_id", "method", "granularity", "target_sparsity"]

# Column lists, derived (kept as names because callers index frames with them).
RESULT_COLUMNS: list[str] = RESULTS.required
OUTCOME_COLUMNS: list[str] = OUTCOMES.names
SANITY_COLUMNS: list[str] = SANITY.names
LAYER_SPARSITY_COLUMNS: list[str] = LAYER_SPARSITY.names
TRAIN_LOG_COLUMNS: list[str] = TRAIN_LOG.names


def validate_columns(df: pd.DataFrame, required: Iterable[str], what: str) -> None:
    """Raise if `df` lacks any of `required`.

    Args:
        df: The table to check.
        required: Column names that must be present (extra columns are allowed).
        what: Name of the table for the message, e.g. "results.csv".

    Raises:
        ReportError: Naming every missing column.
    """
    required = list(required)
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ReportError(
            f"{what} lacks column(s) {missing}; it must have {required} (re-run the pipeline or add the columns)"
        )


def _as_bool(series: pd.Series, what: str) -> pd.Series:
    """Turn 0/1, True/False or 'true'/'false' into bools; raise on anything else."""
    text = series.astype(str).str.strip().str.lower()
    bad = ~text.isin(_TRUE | _FALSE)
    if bad.any():
        raise ReportError(f"{what} holds {series[bad].iloc[0]!r}; allowed values are 0/1 or true/false")
    return text.isin(_TRUE)


def _as_number(series: pd.Series, what: str, kind: Kind) -> pd.Series:
    converted = pd.to_numeric(series, errors="coerce")
    bad = converted.isna() & series.notna() & (series.astype(str).str.strip() != "")
    if bad.any():
        raise ReportError(f"{what} holds non-numeric value {series[bad].iloc[0]!r}; it must be a number or empty")
    if kind == "int":
        whole = converted.dropna()
        if len(whole) and not (whole == whole.round()).all():
            raise ReportError(f"{what} holds {whole[whole != whole.round()].iloc[0]!r}; it must be a whole number")
    return converted


def _as_text(series: pd.Series) -> pd.Series:
    # object first: a column read as all-empty is float64, which refuses a string fill value
    return series.astype(object).where(series.notna(), "").astype(str)


def validate_table(df: pd.DataFrame, table: Table, *, what: str | None = None) -> pd.DataFrame:
    """Check a table read from disk against its contract and return it with every column typed.

    Missing optional columns are added empty; extra columns are kept as they are. Numbers come
    back as float64 or int64 (float64 where an int column has empty cells), text as str (empty
    when missing), bools as bool.

    Args:
        df: The table as read.
        table: Its contract (`RESULTS`, `OUTCOMES`, `SANITY`, `LAYER_SPARSITY`).
        what: Name for messages (default: the file name).

    Raises:
        ReportError: A required column is missing, a cell does not fit its kind or vocabulary,
            or a row repeats the table's unique columns.
    """
    what = what or table.file
    validate_columns(df, table.required, what)
    out = df.copy()
    for col, kind in table.columns.items():
        if col not in out.columns:
            out[col] = "" if kind == "str" else pd.NA
        label = f"{what} column {col!r}"
        if kind == "str":
            out[col] = _as_text(out[col])
        elif kind == "bool":
            out[col] = _as_bool(out[col], label)
        else:
            out[col] = _as_number(out[col], label, kind)
    for col, allowed in table.vocabularies.items():
        bad = ~out[col].isin(allowed)
        if bad.any():
            raise ReportError(
                f"{what} column {col!r} holds {out.loc[bad, col].iloc[0]!r}; allowed values: {list(allowed)}"
            )
    if table.unique:
        dup = out.duplicated(list(table.unique))
        if dup.any():
            first = out.loc[dup, list(table.unique)].iloc[0].tolist()
            raise ReportError(f"{what} repeats {tuple(table.unique)} {first}; each must appear once")
    return out


def validate_results(df: pd.DataFrame, *, what: str = "results table") -> pd.DataFrame:
    """Check a results table against `RESULTS` and return it typed (see `validate_table`).

    Raises:
        ReportError: As `validate_table`, and also if the table is empty or has no clean row.

    Example:
        >>> validate_results(pd.read_csv("runs/x/results.csv"))  # doctest: +SKIP
    """
    validate_columns(df, RESULTS.required, what)
    if df.empty:
        raise ReportError(f"{what} has no rows; run the attack sweep first")
    out = validate_table(df, RESULTS, what=what)
    if not (out["eps_kind"] == "clean").any():
        raise ReportError(f"{what} has no row with eps_kind='clean'; clean accuracy is needed as the reference")
    return out


def cast_for_writing(df: pd.DataFrame, table: Table) -> pd.DataFrame:
    """`df` with exactly `table`'s columns, in file order, typed for writing.

    Integer columns become nullable integers, so a table assembled from rows computed now and rows
    read back from disk (where an empty cell made the column float) is written identically.

    Raises:
        KeyError: A required column is missing (a programming error in the writer).
    """
    missing = [c for c in table.required if c not in df.columns]
    if missing:
        raise KeyError(f"{table.file}: the writer lacks column(s) {missing}")
    out = pd.DataFrame(index=df.index)
    for col, kind in table.columns.items():
        if col not in df.columns:
            out[col] = ""
        elif kind == "int":
            out[col] = pd.to_numeric(df[col]).round().astype("Int64")
        elif kind == "float":
            out[col] = pd.to_numeric(df[col]).astype("float64")
        elif kind == "bool":
            out[col] = df[col].astype(bool)
        else:
            out[col] = df[col]
    return out.reset_index(drop=True)
