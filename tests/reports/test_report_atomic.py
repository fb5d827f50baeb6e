"""Atomic writes (reports.atomic, the one implementation): all or nothing, the usual modes, durable, reproducible."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pandas as pd
import pytest

from reports.atomic import atomic_dir, atomic_path, write_csv_atomic, write_text_atomic


def test_written_files_and_folders_get_the_umask_in_force_at_write_time(tmp_path):
    # a umask cached at import (the old code) would give 0o644 here, not 0o640
    old = os.umask(0o027)
    try:
        path = write_text_atomic(tmp_path / "a.txt", "hello")
        with atomic_dir(tmp_path / "report") as tmp:
            (tmp / "x").write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "report").stat().st_mode) == 0o750


def test_importing_leaves_the_process_umask_alone():
    # os.umask is the only way to read the umask; a module that calls it at import changes global state
    code = (
        "import os; os.umask(0o077)\n"
        "calls = []\n"
        "real = os.umask\n"
        "os.umask = lambda m: calls.append(m) or real(m)\n"
        "import reports.atomic, robustsparse.utils.atomic\n"
        "assert calls == [], calls\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ})


def test_data_is_flushed_to_disk_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: events.append("fsync") or real_fsync(fd))
    monkeypatch.setattr(os, "replace", lambda a, b: events.append("replace") or real_replace(a, b))
    write_text_atomic(tmp_path / "a.txt", "hello")
    assert events.index("fsync") < events.index("replace")


def test_failure_leaves_the_old_file_and_no_temporary(tmp_path):
    path = write_text_atomic(tmp_path / "a.txt", "old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_folder_swap_replaces_all_or_nothing(tmp_path):
    target = tmp_path / "report"
    with atomic_dir(target) as tmp:
        (tmp / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "new.txt").write_text("half")
        raise RuntimeError("killed")
    assert [p.name for p in target.iterdir()] == ["old.txt"]
    with atomic_dir(target) as tmp:
        (tmp / "new.txt").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["report"]


def test_folder_swap_refuses_a_file_in_the_way(tmp_path):
    (tmp_path / "report").write_text("not a folder")
    with pytest.raises(NotADirectoryError), atomic_dir(tmp_path / "report"):
        pass
    assert (tmp_path / "report").read_text() == "not a folder"


def test_gzip_csv_bytes_depend_only_on_the_table(tmp_path):
    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    first = write_csv_atomic(tmp_path / "one.csv.gz", frame).read_bytes()
    second = write_csv_atomic(tmp_path / "two.csv.gz", frame).read_bytes()
    assert first == second
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "one.csv.gz"), frame)
