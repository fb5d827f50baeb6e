"""`pt2`: the model as a `torch.export` program, which carries its own graph.

A compacted model (filter / channel pruning, `compact=True`) is a different architecture from the
registered one; a program file holds its graph, so it loads anywhere without robustsparse:
`torch.export.load(path).module()`. The batch dimension is dynamic.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from robustsparse.errors import CheckpointError
from robustsparse.exporting.base import ExportSource, ExportSummary, check_outputs, example_input, write_checked
from robustsparse.exporting.native import compacted
from robustsparse.sparsity import dense_size_bytes

__all__ = ["export_pt2_file", "export_program", "load_program"]


def export_program(model: nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    """`model` (eval mode) traced by `torch.export` with a dynamic batch dimension."""
    batch = torch.export.Dim("batch", min=1, max=65536)
    return torch.export.export(model.eval(), (example,), dynamic_shapes=({0: batch},))


def load_program(path: str | Path) -> nn.Module:
    """The callable module of a `.pt2` file.

    Raises:
        CheckpointError: the file is not a readable `torch.export` program.
    """
    try:
        return torch.export.load(str(path)).module()
    except Exception as exc:  # corrupt or foreign: one line, never a traceback
        raise CheckpointError(f"cannot load {path} as a torch.export program ({type(exc).__name__})") from None


def export_pt2_file(source: ExportSource, out: Path | None, *, compact: bool = False) -> ExportSummary:
    """Write the (masked or compacted) model as a `.pt2` program and check it loads back."""
    model, what = (compacted(source)[0], "compacted") if compact else (source.model, "masked")
    example = example_input(source.meta)
    program = export_program(model, example)
    target = out if out is not None else source.file.with_name(f"model.{what}.pt2")
    gap = write_checked(
        target,
        lambda path: torch.export.save(program, str(path)),
        lambda path: check_outputs(source.model, load_program(path), example, f"{source.file}: the pt2 export"),
    )
    return ExportSummary(
        target,
        "pt2",
        dense_size_bytes(source.model.state_dict()),
        target.stat().st_size,
        {"model": what, "load with": "torch.export.load(path).module()", "max output difference": f"{gap:.2e}"},
    )
