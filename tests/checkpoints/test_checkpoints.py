"""Checkpoints: exact round trip, no code execution on load, loud failures, atomic writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from reports.atomic import atomic_path
from robustsparse.checkpoints import ModelSpec, load_checkpoint, read_meta, save_checkpoint
from robustsparse.errors import CheckpointError
from robustsparse.sparsity import achieved_sparsity

SPEC = ModelSpec("small_cnn", num_classes=10, in_channels=1, image_size=8, mean=(0.3,), std=(0.4,))


def make_model(seed: int = 0):
    torch.manual_seed(seed)
    return SPEC.build().eval()


def save(tmp_path: Path, model, masks=None, **meta) -> Path:
    base = {"model_id": "m", "arch": SPEC.arch, "method": "dense", "clean_acc": 0.5}
    if masks:
        base["achieved_sparsity"] = achieved_sparsity(model, masks)["prunable"]
    base.update(meta)
    return save_checkpoint(tmp_path / "m" / "model.pt", model, SPEC, base, masks=masks)


def half_mask(model) -> dict[str, torch.Tensor]:
    """Zero every other weight of the second conv (a prunable layer), apply it, return the masks."""
    name = [n for n, p in model.named_parameters() if p.ndim == 4][1]
    param = dict(model.named_parameters())[name]
    mask = torch.ones_like(param, dtype=torch.bool)
    mask.view(-1)[::2] = False
    with torch.no_grad():
        param.mul_(mask)
    return {name: mask}


def test_round_trip_gives_identical_logits_masks_and_meta(tmp_path):
    model = make_model()
    masks = half_mask(model)
    path = save(tmp_path, model, masks, method="campfire")
    loaded, meta = load_checkpoint(path.parent)
    x = torch.rand(4, 1, 8, 8)
    assert not loaded.training
    assert torch.equal(loaded(x), model(x))
    assert meta["model_id"] == "m" and meta == read_meta(path.parent)
    assert json.loads((path.parent / "meta.json").read_text())["method"] == "campfire"


def test_pickled_object_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "code-was-executed"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    path = tmp_path / "evil.pt"
    torch.save({"format": "robustsparse.checkpoint", "format_version": 1, "state_dict": {}, "x": Payload()}, path)
    with pytest.raises(CheckpointError, match="pickled Python objects"):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "content, words",
    [
        (b"", "corrupt"),
        (b"not a zip file at all", "corrupt"),
    ],
)
def test_corrupt_files_are_refused(tmp_path, content, words):
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=words):
        load_checkpoint(path)


def test_truncated_checkpoint_is_refused(tmp_path):
    path = save(tmp_path, make_model())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)


def test_foreign_and_missing_checkpoints_are_refused(tmp_path):
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="not a robustsparse checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "absent")


def test_weights_of_another_architecture_are_refused(tmp_path):
    path = save(tmp_path, make_model())
    payload = torch.load(path, weights_only=True)
    payload["model_spec"]["arch"] = "lenet5"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(path)


def test_newer_format_is_refused(tmp_path):
    path = save(tmp_path, make_model())
    payload = torch.load(path, weights_only=True)
    payload["format_version"] = 99
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="format version 99"):
        load_checkpoint(path)


def test_nonzero_masked_weight_is_refused(tmp_path):
    model = make_model()
    masks = half_mask(model)
    path = save(tmp_path, model, masks)
    payload = torch.load(path, weights_only=True)
    name = next(iter(masks))
    payload["state_dict"][name].view(-1)[0] = 1.0  # a pruned position brought back
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="masked weights"):
        load_checkpoint(path)


def test_sparsity_disagreeing_with_metadata_is_refused(tmp_path):
    model = make_model()
    masks = half_mask(model)
    path = save(tmp_path, model, masks)
    meta_file = path.parent / "meta.json"
    payload = torch.load(path, weights_only=True)
    payload["meta"]["achieved_sparsity"] = 0.9
    torch.save(payload, path)
    meta_file.write_text(json.dumps(payload["meta"]))
    with pytest.raises(CheckpointError, match="does not match"):
        load_checkpoint(path)


def test_interrupted_write_keeps_the_previous_checkpoint(tmp_path):
    path = save(tmp_path, make_model(0))
    before = path.read_bytes()
    with pytest.raises(KeyboardInterrupt), atomic_path(path) as tmp:
        tmp.write_bytes(b"half a checkpoint")
        raise KeyboardInterrupt  # killed in the middle of the write
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []
    load_checkpoint(path)
