"""Exports from trained checkpoints: compressed is bit-identical, compact keeps outputs, both load safely."""

from __future__ import annotations

import pytest
import torch

from robustsparse import load_checkpoint
from robustsparse.errors import CheckpointError
from robustsparse.exporting import export_checkpoint, load_exported


@pytest.mark.parametrize("granularity", ["window", "filter"])
def test_compressed_export_round_trips_bit_identical_and_is_smaller(models, granularity, tmp_path):
    summary = export_checkpoint(models[granularity], fmt="compressed", out=tmp_path / "c.pt")
    assert summary.exported_bytes < summary.dense_bytes
    original, meta = load_checkpoint(models[granularity])
    restored, restored_meta = load_exported(tmp_path / "c.pt")
    assert restored_meta["model_id"] == meta["model_id"]
    for key, value in original.state_dict().items():
        other = restored.state_dict()[key]
        assert value.dtype == other.dtype and torch.equal(value, other)


def test_compact_export_is_smaller_and_keeps_outputs(models, tmp_path):
    summary = export_checkpoint(models["filter"], fmt="compact", out=tmp_path / "k.pt")
    original, _ = load_checkpoint(models["filter"])
    small, _ = load_exported(tmp_path / "k.pt")
    n_small = sum(p.numel() for p in small.parameters())
    assert n_small < sum(p.numel() for p in original.parameters())
    x = torch.rand(16, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(small(x), original(x), atol=1e-5)
    assert summary.exported_bytes < summary.dense_bytes


def test_compact_export_refuses_unstructured_granularities(models, tmp_path):
    with pytest.raises(CheckpointError, match="filter or channel"):
        export_checkpoint(models["window"], fmt="compact", out=tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()


def test_load_exported_refuses_foreign_files(tmp_path):
    path = tmp_path / "foreign.pt"
    torch.save({"format": "something-else"}, path)
    with pytest.raises(CheckpointError, match="not a robustsparse export"):
        load_exported(path)
