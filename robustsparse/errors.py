"""User-facing error types: one clear line naming the problem and the fix.

The command line catches `RobustSparseError`, prints its message on one line and exits with
code 2, without a traceback. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = [
    "RobustSparseError",
    "ConfigError",
    "DatasetError",
    "MissingExtra",
    "ModelError",
    "CheckpointError",
    "TrainingDiverged",
]


class RobustSparseError(Exception):
    """Base class for errors caused by the user's input, not by a bug."""


class ConfigError(RobustSparseError, ValueError):
    """A malformed experiment file or override: unknown key, wrong type, value out of vocabulary."""


class DatasetError(RobustSparseError):
    """A dataset that is unknown, missing on disk, or laid out wrongly."""


class ModelError(RobustSparseError, ValueError):
    """An unknown architecture or one that cannot be built for the given data."""


class CheckpointError(RobustSparseError):
    """A checkpoint that is missing, corrupt, foreign, unsafe, or inconsistent with its metadata."""


class MissingExtra(RobustSparseError):
    """An optional dependency that this feature needs is not installed (the message names the extra)."""


class TrainingDiverged(RobustSparseError):
    """Training produced a non-finite loss or non-finite weights; the model cannot be used.

    Raised by the training loop; the pipeline catches it, marks that model as failed and goes on
    with the rest of the grid.

    Attributes:
        step: the global optimizer step at which it was detected.
        detail: what was non-finite, e.g. "training loss nan".
    """

    def __init__(self, detail: str, step: int) -> None:
        super().__init__(f"training diverged at step {step}: {detail}; lower train.lr (or check the data)")
        self.detail = detail
        self.step = step
