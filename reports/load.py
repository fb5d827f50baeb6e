"""Read the files of a finished run directory into DataFrames; never loads a model.

The layout, file names and columns are those of `reports.contract` (which the pipeline writes by).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from reports.contract import (
    CONFIG_FILE,
    LAYER_SPARSITY,
    META_FILE,
    META_REQUIRED,
    MODELS_DIR,
    OUTCOMES,
    OUTCOMES_FILE,
    RESULTS_FILE,
    SANITY,
    SANITY_FILE,
    validate_results,
    validate_table,
)
from reports.errors import ReportError

__all__ = [
    "RUN_DIR_ENV",
    "DEFAULT_RUN_DIR",
    "find_run_dir",
    "load_results",
    "load_outcomes",
    "load_meta",
    "load_layer_sparsity",
    "load_sanity",
    "RunConfigFile",
    "read_run_config_file",
]

log = logging.getLogger(__name__)

#: The environment variable that names the run the notebooks read, and its fallback (what `make run` writes).
RUN_DIR_ENV = "ROBUSTSPARSE_RUN_DIR"
DEFAULT_RUN_DIR = "runs/digits-quick"


def _run_dir(run_dir: str | Path) -> Path:
    path = Path(run_dir)
    if not path.is_dir():
        raise ReportError(f"run directory {str(path)!r} does not exist; pass the folder a finished run wrote")
    return path


def _read_csv(path: Path, what: str, **kwargs: Any) -> pd.DataFrame:
    try:
        return pd.read_csv(path, **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, EOFError) as exc:
        raise ReportError(f"{what} at {str(path)!r} cannot be read ({exc}); re-run the step that writes it") from exc


def find_run_dir(path: str | Path | None = None, *, roots: Sequence[str | Path] | None = None) -> Path:
    """Find a finished run folder (one holding results.csv) from a path that may be relative.

    A notebook opened from `notebooks/` runs in that folder, while runs live under the repository
    root; so a relative path is tried under each of `roots` in turn (by default the current folder,
    then its parent) and the first folder holding results.csv wins.

    Args:
        path: The run folder; None reads the environment variable `RUN_DIR_ENV`, falling back to
            `DEFAULT_RUN_DIR`.
        roots: Folders a relative `path` is looked up from, in order (default: cwd, cwd's parent).

    Returns:
        The absolute, resolved run folder.

    Raises:
        ReportError: If no candidate folder holds results.csv; the message lists the places tried.

    Example:
        >>> run_dir = find_run_dir(os.environ.get(RUN_DIR_ENV, DEFAULT_RUN_DIR))  # doctest: +SKIP
    """
    text = os.environ.get(RUN_DIR_ENV, DEFAULT_RUN_DIR) if path is None else path
    given = Path(text).expanduser()
    if given.is_absolute():
        candidates = [given]
    else:
        bases = [Path.cwd(), Path.cwd().parent] if roots is None else [Path(r) for r in roots]
        candidates = list(dict.fromkeys(base / given for base in bases))
    for candidate in candidates:
        if (candidate / RESULTS_FILE).is_file():
            return candidate.resolve()
    looked = ", ".join(str(c) for c in candidates)
    raise ReportError(
        f"no finished run at {str(text)!r} (looked for {RESULTS_FILE} in {looked}); "
        f"run `make run` first or set {RUN_DIR_ENV} to a run directory"
    )


def load_results(run_dir: str | Path) -> pd.DataFrame:
    """Load and validate the tidy results table.

    Args:
        run_dir: The run directory, or the path of a results CSV file itself.

    Returns:
        The results, one row per model x attack spec, numeric columns typed.

    Raises:
        ReportError: If the file is missing, unreadable or does not fit `contract.RESULTS`.

    Example:
        >>> df = load_results("runs/digits-quick")  # doctest: +SKIP
        >>> df[df.attack == "clean"][["model_id", "accuracy"]]  # doctest: +SKIP
    """
    path = Path(run_dir)
    if path.is_dir():
        path = path / RESULTS_FILE
    if not path.is_file():
        raise ReportError(
            f"no results table at {str(path)!r}; run the attack sweep first (robustsparse run CONFIG) "
            "or pass the directory that holds results.csv"
        )
    return validate_results(_read_csv(path, "results table"), what=str(path))


def load_outcomes(run_dir: str | Path, *, missing_ok: bool = False) -> pd.DataFrame | None:
    """Load the per-example outcomes (model_id, key, example, correct as 0/1 int).

    Args:
        run_dir: The run directory.
        missing_ok: Return None instead of raising when the file is absent.

    Returns:
        The outcomes table, or None if absent and `missing_ok`.

    Raises:
        ReportError: If the file is absent (and not `missing_ok`) or malformed.
    """
    path = _run_dir(run_dir) / OUTCOMES_FILE
    if not path.is_file():
        if missing_ok:
            return None
        raise ReportError(f"no per-example outcomes at {str(path)!r}; the attack sweep writes them")
    df = _read_csv(path, "outcomes table", dtype={"model_id": str, "key": str})
    df = validate_table(df, OUTCOMES, what=str(path))[OUTCOMES.names]
    df["correct"] = df["correct"].astype("int8")  # 0/1: sums count correct examples
    if df["example"].isna().any():
        raise ReportError(f"{path} column 'example' has an empty cell; it must be the example index")
    df["example"] = df["example"].astype("int64")
    return df


def load_sanity(run_dir: str | Path, *, missing_ok: bool = False) -> pd.DataFrame | None:
    """Load the sanity-check flags (model_id, check, status, evidence).

    `status` is one of `contract.SANITY_STATUSES`: passed, failed, or not_run (the check had
    nothing to compare; it neither passed nor failed).

    Args:
        run_dir: The run directory.
        missing_ok: Return None instead of raising when the file is absent.

    Raises:
        ReportError: If the file is absent (and not `missing_ok`) or malformed.
    """
    path = _run_dir(run_dir) / SANITY_FILE
    if not path.is_file():
        if missing_ok:
            return None
        raise ReportError(f"no sanity-check table at {str(path)!r}; the attack sweep writes it")
    df = _read_csv(path, "sanity table", dtype=str, keep_default_na=False)
    return validate_table(df, SANITY, what=str(path))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReportError(f"model metadata {str(path)!r} is not valid JSON ({exc}); re-run the pipeline") from exc
    if not isinstance(data, dict):
        raise ReportError(f"model metadata {str(path)!r} holds a {type(data).__name__}, not a JSON object")
    return data


def _model_dirs(run_dir: Path) -> list[Path]:
    models = run_dir / MODELS_DIR
    if not models.is_dir():
        return []
    return sorted(p for p in models.iterdir() if p.is_dir())


def load_meta(run_dir: str | Path, *, missing_ok: bool = False) -> pd.DataFrame:
    """Load every model's meta.json into one table, one row per model.

    Nested objects are flattened with dots (``versions.torch``).

    Args:
        run_dir: The run directory.
        missing_ok: Return an empty table instead of raising when no meta.json exists.

    Raises:
        ReportError: If no model has metadata (and not `missing_ok`), a file is not JSON, lacks
            `META_REQUIRED` fields, or names a model_id other than its folder.
    """
    root = _run_dir(run_dir)
    rows = []
    for model_dir in _model_dirs(root):
        path = model_dir / META_FILE
        if not path.is_file():
            log.warning("model folder %s has no meta.json; left out of the report", model_dir)
            continue
        data = _read_json(path)
        missing = [k for k in META_REQUIRED if k not in data]
        if missing:
            raise ReportError(f"{path} lacks field(s) {missing}; every meta.json needs {META_REQUIRED}")
        if str(data["model_id"]) != model_dir.name:
            raise ReportError(
                f"{path} names model_id {data['model_id']!r} but sits in folder {model_dir.name!r}; they must agree"
            )
        rows.append(data)
    if not rows:
        if missing_ok:
            return pd.DataFrame(columns=META_REQUIRED)
        raise ReportError(f"no models/<model_id>/meta.json under {str(root)!r}; train models first")
    meta = pd.json_normalize(rows, sep=".")
    meta["model_id"] = meta["model_id"].astype(str)
    return meta.sort_values("model_id", kind="stable").reset_index(drop=True)


def load_layer_sparsity(run_dir: str | Path, *, missing_ok: bool = False) -> pd.DataFrame:
    """Load every model's layer_sparsity.csv into one table with a leading `model_id` column.

    Args:
        run_dir: The run directory.
        missing_ok: Return an empty table instead of raising when no model has the file.

    Raises:
        ReportError: If no model has the file (and not `missing_ok`) or one is malformed.
    """
    root = _run_dir(run_dir)
    frames = []
    for model_dir in _model_dirs(root):
        path = model_dir / LAYER_SPARSITY.file
        if not path.is_file():
            continue
        df = _read_csv(path, "layer sparsity table", dtype={"name": str, "shape": str, "granularity": str})
        df = validate_table(df, LAYER_SPARSITY, what=str(path))
        df.insert(0, "layer_index", range(len(df)))
        df.insert(0, "model_id", model_dir.name)
        frames.append(df)
    if not frames:
        if missing_ok:
            return pd.DataFrame(columns=["model_id", "layer_index", *LAYER_SPARSITY.names])
        raise ReportError(f"no models/<model_id>/layer_sparsity.csv under {str(root)!r}; train models first")
    return pd.concat(frames, ignore_index=True)


@dataclass(frozen=True)
class RunConfigFile:
    """A run's config.yaml as stored: the settings as plain YAML data (not validated) and the text.

    `reports` shows these and reads a few names from them; the typed, validated configuration is
    `robustsparse.load_config`'s business.
    """

    settings: dict[str, Any]
    text: str


def read_run_config_file(run_dir: str | Path, *, missing_ok: bool = False) -> RunConfigFile | None:
    """Read the resolved experiment config a run folder stores (config.yaml), untyped.

    Args:
        run_dir: The run directory.
        missing_ok: Return None instead of raising when config.yaml is absent.

    Returns:
        The settings and the raw text, or None if absent and `missing_ok`.

    Raises:
        ReportError: If the file is absent (and not `missing_ok`) or is not a YAML mapping.
    """
    path = _run_dir(run_dir) / CONFIG_FILE
    if not path.is_file():
        if missing_ok:
            return None
        raise ReportError(f"no {CONFIG_FILE} in {str(path.parent)!r}; the pipeline writes the resolved config there")
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ReportError(f"{path} is not valid YAML ({exc}); re-run the pipeline") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ReportError(f"{path} holds a {type(data).__name__}, not a mapping of settings")
    return RunConfigFile(data, text)
