"""Training curves as TensorBoard event files (optional: `train.tensorboard: true`, the `tensorboard` extra).

The epoch rows of `train_log.csv` (losses, accuracies, learning rate, target and achieved
sparsity, epoch time) are written as scalars at step = epoch into `<model folder>/tensorboard/`,
so `tensorboard --logdir runs/<name>/models` shows every model of a run side by side. The CSV
stays the record; the event files are a view of it.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from robustsparse.errors import MissingExtra

__all__ = ["TENSORBOARD_PACKAGE", "require_tensorboard", "CurveWriter"]

#: the package SummaryWriter needs (the `tensorboard` extra)
TENSORBOARD_PACKAGE = "tensorboard"


def require_tensorboard() -> None:
    """Refuse, in one line, `train.tensorboard: true` without the package installed."""
    if importlib.util.find_spec(TENSORBOARD_PACKAGE) is None:
        raise MissingExtra(
            "train.tensorboard: true needs tensorboard: install the extra with pip install 'robustsparse[tensorboard]'"
        )


class CurveWriter:
    """Writes one `train_log.csv` row per epoch as TensorBoard scalars (step = the row's `epoch`)."""

    def __init__(self, folder: str | Path) -> None:
        require_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(log_dir=str(folder))

    def add_epoch(self, row: Mapping[str, Any]) -> None:
        """The row's numeric, finite values (booleans as 0/1) under their column names."""
        epoch = int(row["epoch"])
        for name, value in row.items():
            if name == "epoch" or not isinstance(value, (int, float, bool)):
                continue
            if math.isfinite(float(value)):
                self._writer.add_scalar(name, float(value), global_step=epoch)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()
