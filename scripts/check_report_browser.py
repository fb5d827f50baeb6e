#!/usr/bin/env python3
"""Open a report's index.html in headless Chromium and check that it renders completely.

Checks: the page loads from disk; every <img> is complete with a natural width > 0; nothing is
written to the console at error level (console.error, uncaught exceptions, failed loads); no
request leaves the page for the network (only file:, data: and about: URLs). Optionally keeps a
screenshot for people to look at.

Talks to Chromium over the DevTools protocol on a pipe (--remote-debugging-pipe: JSON messages
separated by NUL bytes on file descriptors 3 and 4), so it needs only the standard library and
Debian's `chromium` package.

    python scripts/check_report_browser.py runs/x/report/index.html --screenshot report.png

Exit status: 0 when every check passes, 1 when one fails, 2 when Chromium cannot be run.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from base64 import b64decode
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["PageCheck", "BrowserError", "find_chromium", "check_page", "main"]

_CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
_LOCAL_SCHEMES = ("file:", "data:", "about:", "blob:", "chrome:", "devtools:")
_CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",  # containers and CI run as root, where Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--no-first-run",
    "--no-default-browser-check",
    "--hide-scrollbars",
    "--mute-audio",
]

# Runs in the page once it has loaded: waits for every image to decode, then reports each one.
_IMAGE_PROBE = """
(async () => {
  const imgs = Array.from(document.images);
  await Promise.all(imgs.map(i => i.decode().catch(() => null)));
  return imgs.map(i => ({alt: i.alt, src: i.src.slice(0, 60), complete: i.complete,
                         naturalWidth: i.naturalWidth, naturalHeight: i.naturalHeight}));
})()
"""


class BrowserError(RuntimeError):
    """Chromium could not be found, started, or driven."""


@dataclass
class PageCheck:
    """What the browser saw on the page."""

    url: str
    images: list[dict[str, Any]] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    external_requests: list[str] = field(default_factory=list)
    title: str = ""
    screenshot: Path | None = None

    @property
    def broken_images(self) -> list[dict[str, Any]]:
        """Images that did not load (incomplete or zero width)."""
        return [i for i in self.images if not i.get("complete") or not i.get("naturalWidth")]

    @property
    def ok(self) -> bool:
        """True when every image loaded, nothing was logged as an error, and nothing went to the network."""
        return not self.broken_images and not self.console_errors and not self.external_requests

    def problems(self) -> list[str]:
        """One line per failed check."""
        out = [f"image not loaded: alt={i.get('alt')!r} src={i.get('src')!r}" for i in self.broken_images]
        out += [f"console error: {e}" for e in self.console_errors]
        out += [f"network request: {u}" for u in self.external_requests]
        return out


def find_chromium(explicit: str | None = None) -> str:
    """The Chromium executable: `explicit`, $CHROMIUM, or the first of chromium/chrome on PATH.

    Raises:
        BrowserError: If none is found.
    """
    for candidate in (explicit, os.environ.get("CHROMIUM")):
        if candidate:
            found = shutil.which(candidate)
            if found:
                return found
            raise BrowserError(
                f"Chromium {candidate!r} not found; install it (apt-get install -y chromium) or fix the path"
            )
    for name in _CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise BrowserError("no Chromium on PATH; install Debian's package: apt-get install -y chromium")


class _DevTools:
    """A minimal DevTools-protocol client over Chromium's --remote-debugging-pipe."""

    def __init__(self, chromium: str, user_data_dir: str, window: tuple[int, int]) -> None:
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        # Chromium reads commands on fd 3 and writes replies on fd 4; park the ends above 10 first,
        # so the dup2 calls in the child can never overwrite one with the other.
        high_r = fcntl.fcntl(to_child_r, fcntl.F_DUPFD_CLOEXEC, 10)
        high_w = fcntl.fcntl(from_child_w, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(to_child_r)
        os.close(from_child_w)

        def wire_fds() -> None:  # runs in the child between fork and exec
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        cmd = [
            chromium,
            *_CHROMIUM_FLAGS,
            f"--user-data-dir={user_data_dir}",
            f"--window-size={window[0]},{window[1]}",
            "--remote-debugging-pipe",
            "about:blank",
        ]
        try:
            self.proc = subprocess.Popen(
                cmd,
                preexec_fn=wire_fds,
                close_fds=False,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        except OSError as exc:
            raise BrowserError(f"cannot start {chromium}: {exc}") from exc
        finally:
            os.close(high_r)
            os.close(high_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError("Chromium did not answer in time")
            ready, _, _ = select.select([self._from_child], [], [], left)
            if not ready:
                continue
            chunk = os.read(self._from_child, 1 << 16)
            if not chunk:
                raise BrowserError("Chromium closed the DevTools pipe (it may have crashed)")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def call(
        self, method: str, params: dict[str, Any] | None = None, *, session: str | None = None, timeout: float = 30.0
    ) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_child, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"{method} failed: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def wait_for(self, event: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        if any(e["method"] == event for e in self.events):
            return True
        while True:
            try:
                message = self._read_message(deadline)
            except BrowserError:
                return False
            if "method" in message:
                self.events.append(message)
                if message["method"] == event:
                    return True

    def drain(self, seconds: float) -> None:
        """Collect the events that arrive within `seconds` (late console messages)."""
        deadline = time.monotonic() + seconds
        try:
            while True:
                message = self._read_message(deadline)
                if "method" in message:
                    self.events.append(message)
        except BrowserError:
            pass

    def close(self) -> None:
        with contextlib.suppress(BrowserError, OSError):
            self.call("Browser.close", timeout=5)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        for fd in (self._to_child, self._from_child):
            with contextlib.suppress(OSError):
                os.close(fd)


def _console_errors(events: list[dict[str, Any]]) -> list[str]:
    errors = []
    for e in events:
        params = e.get("params", {})
        if e["method"] == "Runtime.consoleAPICalled" and params.get("type") in {"error", "assert"}:
            errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
        elif e["method"] == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            errors.append(details.get("exception", {}).get("description") or details.get("text", "exception"))
        elif e["method"] == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            errors.append(f"{entry.get('text', '')} {entry.get('url', '')}".strip())
    return errors


def check_page(
    html: str | Path,
    *,
    chromium: str | None = None,
    screenshot: str | Path | None = None,
    full_page: bool = True,
    window: tuple[int, int] = (1280, 900),
    timeout: float = 60.0,
) -> PageCheck:
    """Load a local HTML file in headless Chromium and report images, console errors and requests.

    Args:
        html: Path of the page (e.g. report/index.html).
        chromium: Chromium executable (default: see `find_chromium`).
        screenshot: Where to save a PNG screenshot (optional).
        full_page: Screenshot the whole page rather than the first screen.
        window: Window size in CSS pixels.
        timeout: Seconds to wait for the page to load.

    Returns:
        What the browser saw; `.ok` tells whether every check passed.

    Raises:
        BrowserError: If Chromium is missing, will not start, or the page does not load.
        FileNotFoundError: If `html` does not exist.
    """
    page = Path(html).resolve()
    if not page.is_file():
        raise FileNotFoundError(f"no page at {page}")
    exe = find_chromium(chromium)
    profile = tempfile.mkdtemp(prefix="check-report-chromium-")
    browser = _DevTools(exe, profile, window)
    try:
        target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.call(f"{domain}.enable", session=session)
        browser.events.clear()
        result = PageCheck(url=page.as_uri())
        browser.call("Page.navigate", {"url": result.url}, session=session)
        if not browser.wait_for("Page.loadEventFired", timeout):
            raise BrowserError(f"{page} did not finish loading within {timeout:g} s")
        probe = browser.call(
            "Runtime.evaluate",
            {"expression": _IMAGE_PROBE, "awaitPromise": True, "returnByValue": True},
            session=session,
            timeout=timeout,
        )
        result.images = probe.get("result", {}).get("value", [])
        title = browser.call(
            "Runtime.evaluate", {"expression": "document.title", "returnByValue": True}, session=session
        )
        result.title = title.get("result", {}).get("value", "")
        browser.drain(0.5)
        result.console_errors = _console_errors(browser.events)
        result.external_requests = [
            e["params"]["request"]["url"]
            for e in browser.events
            if e["method"] == "Network.requestWillBeSent"
            and not e["params"]["request"]["url"].startswith(_LOCAL_SCHEMES)
        ]
        if screenshot is not None:
            params: dict[str, Any] = {"format": "png"}
            if full_page:
                size = browser.call("Page.getLayoutMetrics", session=session)["cssContentSize"]
                params.update(
                    captureBeyondViewport=True,
                    clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
                )
            shot = browser.call("Page.captureScreenshot", params, session=session, timeout=timeout)
            out = Path(screenshot)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(b64decode(shot["data"]))
            result.screenshot = out
        return result
    finally:
        browser.close()
        shutil.rmtree(profile, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """Command line: check one page, print the outcome, return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("html", type=Path, help="the report's index.html")
    parser.add_argument("--screenshot", type=Path, help="save a PNG screenshot here")
    parser.add_argument(
        "--first-screen", action="store_true", help="screenshot only the first screen, not the whole page"
    )
    parser.add_argument("--chromium", help="Chromium executable (default: $CHROMIUM or chromium on PATH)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the page (default 60)")
    args = parser.parse_args(argv)
    try:
        result = check_page(
            args.html,
            chromium=args.chromium,
            screenshot=args.screenshot,
            full_page=not args.first_screen,
            timeout=args.timeout,
        )
    except (BrowserError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    loaded = len(result.images) - len(result.broken_images)
    print(
        f"{result.url}: title {result.title!r}; {loaded}/{len(result.images)} images loaded; "
        f"{len(result.console_errors)} console errors; {len(result.external_requests)} network requests"
    )
    if result.screenshot is not None:
        print(f"screenshot: {result.screenshot}")
    for problem in result.problems():
        print(f"FAIL {problem}")
    print("ok" if result.ok else "FAILED")
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
