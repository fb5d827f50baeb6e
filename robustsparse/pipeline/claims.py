"""Claims: a lock file per piece of work, so two processes (or workers) on one run folder never do it twice.

A claim is `filelock.FileLock` on `<folder>/.claim.lock`: an OS lock (`flock`) that the operating
system releases when its process ends, however it ends. A claim left by a killed process is
therefore free again at once and the next process takes it over (the work itself resumes from
what was saved: a model from its `last.pt`, an evaluation from its cached specs). The lock file
stays behind; it holds no state and is not part of the run folder's contract.

Usage: try to claim without waiting; if another process holds it, go on with other work and
come back (`wait=True`) when nothing else is left, then check whether the work is done.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

__all__ = ["CLAIM_FILE", "claim", "Claimed"]

log = logging.getLogger(__name__)

#: the lock file inside a model folder (or its eval/ folder)
CLAIM_FILE = ".claim.lock"


class Claimed(Exception):
    """The work is claimed by another process (raised only when not waiting)."""


@contextmanager
def claim(folder: str | Path, *, wait: bool = False) -> Iterator[None]:
    """Hold the claim on `folder`'s work while the block runs.

    Args:
        folder: the folder the work writes into (created if missing).
        wait: block until the claim is free; False raises `Claimed` at once when it is held.

    Raises:
        Claimed: another process holds the claim and `wait` is False.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder / CLAIM_FILE))
    try:
        lock.acquire(timeout=-1 if wait else 0)
    except Timeout:
        raise Claimed(str(folder)) from None
    try:
        yield
    finally:
        lock.release()
