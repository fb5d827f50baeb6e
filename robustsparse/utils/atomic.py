"""Atomic file writes: write a temporary file in the target folder, then rename it into place.

A crash or Ctrl-C in the middle of a write leaves the old file (or no file), never a partial one.
"""

from __future__ import annotations

import gzip
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import torch

# Read once at import: os.umask can only be read by setting it.
_UMASK = os.umask(0)
os.umask(_UMASK)

__all__ = ["atomic_path", "write_text_atomic", "write_json_atomic", "write_csv_atomic", "torch_save_atomic"]


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes files private (0600); outputs get the usual mode
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def _write(path: str | Path, writer: Callable[[Path], None]) -> Path:
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


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
        data = gzip.compress(frame.to_csv(index=False).encode("utf-8"), mtime=0)
        return _write(path, lambda tmp: tmp.write_bytes(data))
    return _write(path, lambda tmp: frame.to_csv(tmp, index=False))


def torch_save_atomic(path: str | Path, obj: Any) -> Path:
    """`torch.save` to `path` atomically."""
    return _write(path, lambda tmp: torch.save(obj, tmp))
