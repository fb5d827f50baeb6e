"""Atomic writes: all or nothing, the usual file mode, reproducible gzip bytes."""

from __future__ import annotations

import os
import stat

import pandas as pd
import pytest

from robustsparse.utils.atomic import atomic_path, write_csv_atomic, write_text_atomic


def test_written_files_get_the_usual_mode_not_private(tmp_path):
    path = write_text_atomic(tmp_path / "a.txt", "hello")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_failure_leaves_the_old_file_and_no_temporary(tmp_path):
    path = write_text_atomic(tmp_path / "a.txt", "old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_gzip_csv_bytes_depend_only_on_the_table(tmp_path):
    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    first = write_csv_atomic(tmp_path / "one.csv.gz", frame).read_bytes()
    second = write_csv_atomic(tmp_path / "two.csv.gz", frame).read_bytes()
    assert first == second
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "one.csv.gz"), frame)
