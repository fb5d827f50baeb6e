"""`onnx`: the (masked or compacted) model as an ONNX graph, checked with ONNX Runtime.

Needs the `onnx` extra (`pip install "robustsparse[onnx]"`: onnx, onnxscript, onnxruntime);
without it the export says so in one line and writes nothing. The input is named `images`
([0, 1], NCHW, dynamic batch) and the output `logits`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from robustsparse.errors import MissingExtra
from robustsparse.exporting.base import ExportSource, ExportSummary, check_outputs, example_input, write_checked
from robustsparse.exporting.native import compacted
from robustsparse.sparsity import dense_size_bytes

__all__ = ["export_onnx_file", "onnx_runner", "ONNX_PACKAGES"]

ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")
#: opset of the exported graph (supported by every ONNX Runtime from 1.17)
OPSET = 18


def _require_extra() -> None:
    missing = [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingExtra(
            f"the onnx export needs {', '.join(missing)}: install the extra with pip install 'robustsparse[onnx]'"
        )


def onnx_runner(path: str | Path):
    """A function images -> logits that runs the ONNX file with ONNX Runtime on the CPU."""
    _require_extra()
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(images: torch.Tensor) -> torch.Tensor:
        (logits,) = session.run(None, {name: images.detach().cpu().numpy().astype(np.float32)})
        return torch.from_numpy(logits)

    return run


def export_onnx_file(source: ExportSource, out: Path | None, *, compact: bool = False) -> ExportSummary:
    """Write the model as ONNX and check ONNX Runtime's outputs against the checkpoint's."""
    _require_extra()
    model, what = (compacted(source)[0], "compacted") if compact else (source.model, "masked")
    example = example_input(source.meta)
    target = out if out is not None else source.file.with_name(f"model.{what}.onnx")
    gap = write_checked(
        target,
        lambda path: torch.onnx.export(
            model.eval(),
            (example,),
            str(path),
            input_names=["images"],
            output_names=["logits"],
            dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=65536)},),
            opset_version=OPSET,
            dynamo=True,
            external_data=False,
            verbose=False,
        ),
        lambda path: check_outputs(source.model, onnx_runner(path), example, f"{source.file}: the onnx export"),
    )
    return ExportSummary(
        target,
        "onnx",
        dense_size_bytes(source.model.state_dict()),
        target.stat().st_size,
        {"model": what, "opset": OPSET, "input": "images [N,C,H,W] in [0,1]", "max output difference": f"{gap:.2e}"},
    )
