"""The report renders in a real browser: headless Chromium loads every figure with no console error.

Deselected by default (marker `browser`); run with `pytest -m browser tests/reports`. Skips when
Debian's chromium is not installed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from reports import build_report

pytestmark = pytest.mark.browser

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "check_report_browser.py"


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return name
    pytest.skip("chromium is not installed (apt-get install -y chromium)")


def _check(page: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(page), "--chromium", _chromium(), *args],
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_report_renders_with_every_figure_and_no_console_error(run_factory, tmp_path: Path) -> None:
    index = build_report(run_factory(include_cw=True))
    n_figures = len(list((index.parent / "figures").glob("*.png")))
    shot = tmp_path / "screenshot.png"
    done = _check(index, "--screenshot", str(shot))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{n_figures}/{n_figures} images loaded; 0 console errors; 0 network requests" in done.stdout
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_checker_catches_a_broken_page(tmp_path: Path) -> None:
    page = tmp_path / "broken.html"
    page.write_text(
        '<!DOCTYPE html><html><head><link rel="icon" href="data:,"><title>broken</title></head><body>'
        '<img src="missing.png" alt="gone"><img src="http://example.invalid/x.png" alt="remote">'
        '<script>console.error("boom")</script></body></html>'
    )
    done = _check(page)
    assert done.returncode == 1
    assert "image not loaded: alt='gone'" in done.stdout
    assert "console error: boom" in done.stdout
    assert "network request: http://example.invalid/x.png" in done.stdout
