"""Export a checkpoint to a format others read; one module per format, each checked by a round trip.

| format | module | what it is |
| --- | --- | --- |
| `compressed` | native | kept values + the cheapest index for the granularity; bit-identical |
| `compact` | native | filter / channel models with the removed channels cut out |
| `torch-prune` | torch_prune | `weight_orig` + `weight_mask`, as `torch.nn.utils.prune` keeps them |
| `pt2` | pt2 | a `torch.export` program (masked, or compacted with `compact=True`) |
| `onnx` | onnx_format | an ONNX graph checked with ONNX Runtime (the `onnx` extra) |

Every export loads its result back and compares outputs (within `OUTPUT_TOLERANCE`, or bit for
bit) before it is written; a failed check writes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from robustsparse.checkpoints import load_checkpoint_with_masks, read_checkpoint, resolve_checkpoint_path
from robustsparse.errors import CheckpointError
from robustsparse.exporting.base import OUTPUT_TOLERANCE, ExportSource, ExportSummary
from robustsparse.exporting.native import (
    COMPACT_KIND,
    COMPRESSED_KIND,
    export_compact_file,
    export_compressed_file,
    load_exported,
)
from robustsparse.exporting.onnx_format import export_onnx_file
from robustsparse.exporting.pt2 import export_pt2_file, load_program
from robustsparse.exporting.torch_prune import apply_torch_prune_layout, export_torch_prune_file

__all__ = [
    "ExportSource",
    "ExportSummary",
    "EXPORT_FORMATS",
    "COMPACTABLE_FORMATS",
    "OUTPUT_TOLERANCE",
    "COMPRESSED_KIND",
    "COMPACT_KIND",
    "export_checkpoint",
    "load_export_source",
    "load_exported",
    "load_program",
    "apply_torch_prune_layout",
]

_Writer = Callable[..., ExportSummary]
_WRITERS: dict[str, _Writer] = {
    "compressed": export_compressed_file,
    "compact": export_compact_file,
    "torch-prune": export_torch_prune_file,
    "pt2": export_pt2_file,
    "onnx": export_onnx_file,
}
#: the export formats, in the order `robustsparse export --format` lists them
EXPORT_FORMATS: tuple[str, ...] = tuple(_WRITERS)
#: formats that can hold the compacted model (`compact=True`) instead of the masked one
COMPACTABLE_FORMATS: tuple[str, ...] = ("pt2", "onnx")


def load_export_source(path: str | Path) -> ExportSource:
    """Load and verify a checkpoint (masks and structure against its metadata) for export."""
    file = resolve_checkpoint_path(path)
    model, meta, masks = load_checkpoint_with_masks(file)
    return ExportSource(file, model.eval(), meta, dict(masks or {}), dict(read_checkpoint(file)["model_spec"]))


def export_checkpoint(
    path: str | Path, *, fmt: str, out: str | Path | None = None, compact: bool = False
) -> ExportSummary:
    """Export the checkpoint at `path` as `fmt` (see the table above), checked before it is written.

    Args:
        path: a model folder or its model.pt.
        fmt: one of `EXPORT_FORMATS`.
        out: the output file (default: beside the checkpoint).
        compact: for `pt2` / `onnx`, export the compacted model (filter / channel pruning).

    Raises:
        CheckpointError: unknown format, an unsafe or inconsistent checkpoint, a compaction the
            granularity does not allow, or an export that failed its own check.
        MissingExtra: the format needs an optional dependency that is not installed.
    """
    if fmt not in _WRITERS:
        raise CheckpointError(f"unknown export format {fmt!r}; allowed: {', '.join(EXPORT_FORMATS)}")
    if compact and fmt not in COMPACTABLE_FORMATS:
        raise CheckpointError(
            f"--compact applies to {', '.join(COMPACTABLE_FORMATS)}; for a compacted checkpoint use --format compact"
        )
    source = load_export_source(path)
    target = Path(out) if out is not None else None
    if fmt in COMPACTABLE_FORMATS:
        return _WRITERS[fmt](source, target, compact=compact)
    return _WRITERS[fmt](source, target)
