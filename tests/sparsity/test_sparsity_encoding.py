"""Compressed encoding (sparsity.encoding): bit-identical round trip for every granularity, smaller than dense, cheaper index for
coarser structure, refuses unmasked exports."""

from __future__ import annotations

import copy
import io

import pytest
import torch

from robustsparse.errors import CheckpointError
from robustsparse.sparsity import (
    GRANULARITIES,
    compressed_size_bytes,
    dense_size_bytes,
    export_compressed,
    load_compressed,
    prune_one_shot,
)


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().reshape(-1).view(torch.uint8) if t.dtype != torch.bool else t


@pytest.mark.parametrize("granularity", GRANULARITIES)
def test_round_trip_is_bit_identical_and_smaller(tiny_net, granularity: str) -> None:
    pruner = prune_one_shot(tiny_net, granularity, 0.7)
    state = tiny_net.state_dict()
    blob = export_compressed(state, pruner.masks, pruner.granularity_info())
    buffer = io.BytesIO()
    torch.save(blob, buffer)
    buffer.seek(0)
    back = load_compressed(torch.load(buffer, weights_only=True))
    assert list(back) == list(state)
    for name, value in state.items():
        assert back[name].dtype == value.dtype and back[name].shape == value.shape, name
        assert torch.equal(_bits(back[name]), _bits(value)), name
    assert compressed_size_bytes(blob) < dense_size_bytes(state)
    copy_model = copy.deepcopy(tiny_net)
    copy_model.load_state_dict(back)


def test_coarser_structure_needs_a_smaller_index(tiny_net) -> None:
    sizes = {}
    for granularity in ("element", "kernel", "column", "filter"):
        model = copy.deepcopy(tiny_net)
        pruner = prune_one_shot(model, granularity, 0.7)
        blob = export_compressed(model.state_dict(), pruner.masks, pruner.granularity_info())
        kept = sum(int(m.sum()) for m in pruner.masks.values())
        values = kept * 4
        sizes[granularity] = compressed_size_bytes(blob) - values
    assert sizes["filter"] < sizes["kernel"] < sizes["element"]
    # a column (one position in every filter) is one bit per C*R*S position, fewer than K*C kernels
    assert sizes["column"] < sizes["kernel"]
    # at 2:4 the pattern rank (3 bits per group of 4) beats a bitmap (4 bits)
    model = copy.deepcopy(tiny_net)
    pruner = prune_one_shot(model, "n:m", 0.5)
    nm = export_compressed(model.state_dict(), pruner.masks, pruner.granularity_info())
    model = copy.deepcopy(tiny_net)
    pruner_el = prune_one_shot(model, "element", 0.5)
    el = export_compressed(model.state_dict(), pruner_el.masks, pruner_el.granularity_info())
    assert compressed_size_bytes(nm) < compressed_size_bytes(el)


def test_unmasked_or_negative_zero_entries_are_refused(tiny_net) -> None:
    pruner = prune_one_shot(tiny_net, "element", 0.7)
    state = {k: v.clone() for k, v in tiny_net.state_dict().items()}
    mask = pruner.masks["conv3.weight"]
    state["conv3.weight"][~mask] = -0.0
    with pytest.raises(CheckpointError, match=r"\+0\.0"):
        export_compressed(state, pruner.masks)
    state["conv3.weight"][~mask] = 0.25
    with pytest.raises(CheckpointError, match="apply the masks"):
        export_compressed(state, pruner.masks)
    with pytest.raises(CheckpointError, match="not a compressed export"):
        load_compressed(state)
