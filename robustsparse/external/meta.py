"""The metadata of a model from outside: what the results table and the report need to know.

An external model gets the same accounting as ours (fraction of zeros over its conv / linear
weights and over all parameters, effective MACs, the per-layer table) and the structure its zeros
actually have, read from the weights: `filter` when every pruned layer lost whole filters only,
`kernel` when whole kernels, `element` otherwise, `dense` with no zeros. Its `config_digest` is
the hash of the model file and the card, so a changed file is attacked afresh.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustsparse.config import config_digest, config_to_dict
from robustsparse.data.info import DatasetInfo
from robustsparse.external.card import ModelCard
from robustsparse.sparsity import achieved_sparsity, model_cost
from robustsparse.sparsity.layers import conv_linear_layers
from robustsparse.utils.runtime import library_versions

__all__ = ["EXTERNAL_METHOD", "external_meta", "external_digest", "zero_structure", "file_sha256"]

#: the `method` of every model that was not trained by robustsparse
EXTERNAL_METHOD = "external"


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def external_digest(card: ModelCard) -> str:
    """The digest of the model file's bytes and the card: what decides the evaluation results."""
    return config_digest({"file": file_sha256(card.weights), "card": config_to_dict(card)})


def _layer_structure(weight: torch.Tensor) -> str:
    """The coarsest group whose zeros explain this weight's zeros (dense, filter, kernel, element)."""
    zero = weight == 0
    if not bool(zero.any()):
        return "dense"
    rows = zero.reshape(weight.shape[0], -1)
    if bool((rows.all(1) | ~rows.any(1)).all()):
        return "filter"
    if weight.dim() == 4 and weight.shape[2] * weight.shape[3] > 1:
        kernels = zero.reshape(weight.shape[0], weight.shape[1], -1)
        if bool((kernels.all(2) | ~kernels.any(2)).all()):
            return "kernel"
    return "element"


def zero_structure(model: nn.Module) -> str:
    """The structure of the zeros of all conv / linear weights (see the module docstring)."""
    found = {_layer_structure(module.weight.detach()) for module in _weights(model)} - {"dense"}
    for structure in ("element", "kernel", "filter"):  # finest first: one element layer makes it element
        if structure in found:
            return structure
    return "dense"


def _weights(model: nn.Module) -> list[nn.Module]:
    modules = dict(model.named_modules())
    return [modules[layer.module] for layer in conv_linear_layers(model)]


def external_meta(
    card: ModelCard, model: nn.Module, masks: dict[str, torch.Tensor], info: DatasetInfo, fmt: str
) -> dict[str, Any]:
    """The metadata of an external model, in the keys our own models' meta.json uses."""
    size = card.image_size or info.image_size
    sparsity = achieved_sparsity(model, masks or None)
    with torch.no_grad():
        cost = model_cost(model, (1, info.in_channels, size, size), masks or None)
    data = {"dataset": card.dataset, "root": card.data_root, "split_seed": 0, "image_size": card.image_size}
    return {
        "model_id": card.model_id,
        "arch": card.arch or f"{fmt}:{Path(card.weights).name}",
        "dataset": card.dataset,
        "method": EXTERNAL_METHOD,
        "granularity": zero_structure(model),
        "target_sparsity": float(sparsity["prunable"]),  # nothing was targeted: what it has
        "achieved_sparsity": float(sparsity["prunable"]),
        "achieved_sparsity_all": float(sparsity["all"]),
        "seed": 0,
        "status": "external",
        "config_digest": external_digest(card),
        **{k: (float(v) if isinstance(v, float) else int(v)) for k, v in cost.items()},
        "external": {**config_to_dict(card), "format": fmt, "torch_prune_masks": len(masks)},
        "data": {**data, "info": {**asdict(info), "mean": list(info.mean), "std": list(info.std)}},
        "versions": library_versions(),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
