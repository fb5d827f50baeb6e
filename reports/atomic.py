"""All-or-nothing writes of files and folders: write beside the target, flush to disk, rename into place.

A crash or Ctrl-C in the middle of a write leaves the old file (or folder, or nothing), never a
partial one. The one implementation for the whole project: `robustsparse` writes its run folder
with it, `reports` its report folder (it lives here because `reports` never imports `robustsparse`).

Temporary files and folders are created with the usual modes (0o666 / 0o777, minus the process
umask, applied by the kernel), so outputs are readable as any other file; the umask is never
read or changed.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = [
    "atomic_path",
    "atomic_dir",
    "write_text_atomic",
    "write_json_atomic",
    "write_csv_atomic",
    "write_bytes_atomic",
    "write_parquet_atomic",
]


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable (a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _sibling(path: Path, kind: str) -> Path:
    return path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.{kind}"


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary file path beside `path`; on success it replaces `path`, on error it is removed.

    The temporary file exists (empty) when yielded; whatever the caller writes to it is flushed to
    disk (fsync) before the rename, so after a power loss the target holds the old or the new bytes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path, "tmp")
    # os.open with 0o666: the kernel applies the umask, as for any new file (mkstemp would make it 0600)
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; on success it takes the place of `path` (old content removed).

    Every file written into the folder is flushed to disk before the swap, so a crash leaves either
    the old folder or the new one, never half of one.

    Raises:
        NotADirectoryError: If `path` exists and is not a folder (nothing is written).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{path} exists and is not a folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(path, "tmp")
    tmp.mkdir(mode=0o777)  # the umask applies, as for any new folder
    try:
        yield tmp
        for file in sorted(p for p in tmp.rglob("*") if p.is_file()):
            _fsync_file(file)
        if path.exists():
            old = _sibling(path, "old")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _write(path: str | Path, writer: Callable[[Path], Any]) -> Path:
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` atomically."""
    return _write(path, lambda tmp: tmp.write_bytes(data))


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically."""
    return _write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """Write `data` as indented JSON to `path` atomically."""
    return write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_csv_atomic(path: str | Path, frame: pd.DataFrame) -> Path:
    """Write a DataFrame as CSV (no index) to `path` atomically; `.gz` paths are compressed.

    The gzip header carries no timestamp or file name, so the same table always gives the same bytes.
    """
    if str(path).endswith(".gz"):
        return write_bytes_atomic(path, gzip.compress(frame.to_csv(index=False).encode("utf-8"), mtime=0))
    return _write(path, lambda tmp: frame.to_csv(tmp, index=False))


def write_parquet_atomic(path: str | Path, frame: pd.DataFrame) -> Path:
    """Write a DataFrame as Parquet (pyarrow, no index) to `path` atomically."""
    return _write(path, lambda tmp: frame.to_parquet(tmp, index=False, engine="pyarrow"))
