"""Exports for other tools: torch-prune, pt2 and onnx each round-trip within 1e-5 and refuse cleanly."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils import prune

from robustsparse import load_checkpoint
from robustsparse.checkpoints import ModelSpec, load_checkpoint_with_masks, read_checkpoint
from robustsparse.cli import build_parser
from robustsparse.errors import CheckpointError, MissingExtra
from robustsparse.exporting import EXPORT_FORMATS, OUTPUT_TOLERANCE, export_checkpoint, load_program, onnx_format

# a batch size the exports never saw: the batch dimension must be dynamic
X = torch.rand(7, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def _logits(model, x=X):
    with torch.no_grad():
        return model(x)


@pytest.mark.parametrize("granularity", ["window", "filter"])
def test_torch_prune_state_loads_into_a_pruned_copy_with_the_same_masks_and_outputs(models, granularity, tmp_path):
    path = tmp_path / "tp.pt"
    export_checkpoint(models[granularity], fmt="torch-prune", out=path)
    original, _, masks = load_checkpoint_with_masks(models[granularity])
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert masks and not any(name in state for name in masks)  # every masked weight is reparametrised
    # as a torch.nn.utils.prune user would: prune the same modules of the plain architecture, then load
    copy = ModelSpec.from_dict(read_checkpoint(models[granularity])["model_spec"]).build().eval()
    modules = dict(copy.named_modules())
    for name in masks:  # filter pruning also masks the BatchNorm scale and shift of a removed filter
        module_name, _, param = name.rpartition(".")
        module = modules[module_name]
        prune.custom_from_mask(module, param, torch.ones_like(getattr(module, param)))
    copy.load_state_dict(state, strict=True)
    for name, mask in masks.items():
        assert torch.equal(dict(copy.named_buffers())[name + "_mask"].bool(), mask)
        pruned_values = dict(copy.named_parameters())[name + "_orig"][~mask]
        assert pruned_values.abs().sum() == 0
    assert (_logits(copy) - _logits(original)).abs().max() <= OUTPUT_TOLERANCE


@pytest.mark.parametrize("compact", [False, True], ids=["masked", "compacted"])
def test_pt2_program_round_trips_within_tolerance_at_any_batch_size(models, compact, tmp_path):
    path = tmp_path / "m.pt2"
    summary = export_checkpoint(models["filter"], fmt="pt2", out=path, compact=compact)
    original, _ = load_checkpoint(models["filter"])
    program = load_program(path)
    assert (_logits(program) - _logits(original)).abs().max() <= OUTPUT_TOLERANCE
    assert summary.details["model"] == ("compacted" if compact else "masked")
    n_params = sum(p.numel() for p in program.parameters())
    n_original = sum(p.numel() for p in original.parameters())
    assert (n_params < n_original) == compact  # compacting cuts the pruned channels out of the graph


def test_onnx_graph_round_trips_within_tolerance(models, tmp_path):
    pytest.importorskip("onnxruntime")
    path = tmp_path / "m.onnx"
    export_checkpoint(models["window"], fmt="onnx", out=path)
    original, _ = load_checkpoint(models["window"])
    run = onnx_format.onnx_runner(path)
    assert (run(X) - _logits(original)).abs().max() <= OUTPUT_TOLERANCE


def test_onnx_without_its_extra_says_which_packages_to_install_and_writes_nothing(models, tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_format, "ONNX_PACKAGES", ("onnx", "robustsparse_no_such_package"))
    with pytest.raises(MissingExtra, match=r"robustsparse_no_such_package.*robustsparse\[onnx\]"):
        export_checkpoint(models["window"], fmt="onnx", out=tmp_path / "m.onnx")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"fmt": "tflite"}, "unknown export format 'tflite'; allowed: compressed, compact, torch-prune, pt2, onnx"),
        ({"fmt": "compressed", "compact": True}, "--compact applies to pt2, onnx"),
        ({"fmt": "pt2", "compact": True, "_granularity": "window"}, "compacting needs whole channels removed"),
    ],
)
def test_an_export_that_cannot_be_made_is_refused_in_one_line_and_writes_nothing(models, tmp_path, kwargs, words):
    granularity = kwargs.pop("_granularity", "filter")
    with pytest.raises(CheckpointError) as info:
        export_checkpoint(models[granularity], out=tmp_path / "out", **kwargs)
    assert words in str(info.value) and "\n" not in str(info.value)
    assert not list(tmp_path.iterdir())


def test_the_cli_offers_exactly_the_registered_formats():
    export = build_parser()._subparsers._group_actions[0].choices["export"]
    (fmt,) = [a for a in export._actions if a.dest == "format"]
    assert tuple(fmt.choices) == EXPORT_FORMATS
