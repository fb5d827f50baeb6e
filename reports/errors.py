"""The one error type that `reports` raises for user-facing problems."""

from __future__ import annotations

__all__ = ["ReportError", "NothingToPlot"]


class ReportError(ValueError):
    """A run directory or a results table cannot be turned into a report.

    The message names the problem, the bad value and the fix, on one line.
    """


class NothingToPlot(ReportError):
    """The data hold nothing this figure can show (e.g. no sparse models, one eps only).

    `build_report` catches it, skips the figure and writes the reason into the report's notes.
    """
