"""Models from outside the project: described by a `ModelCard`, loaded safely, attacked like ours.

`import_external(card, models_dir)` writes a model folder (meta.json + layer_sparsity.csv, no
copy of the weights) that the evaluation stage reads like any other; `load_external_folder`
loads such a folder's model again from the card recorded in its metadata, after checking that
the file is still the one imported.

Example:
    >>> card = read_model_card("card.yaml")
    >>> model, meta = load_external_model(card)       # a module taking [0, 1] images, and its metadata
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from reports.atomic import write_csv_atomic, write_json_atomic
from reports.contract import LAYER_SPARSITY_FILE, META_FILE
from robustsparse.data import load_dataset
from robustsparse.data.info import DatasetInfo
from robustsparse.errors import CheckpointError
from robustsparse.external.card import FORMATS, ModelCard, read_model_card
from robustsparse.external.loading import detect_format, fold_torch_prune, load_external
from robustsparse.external.meta import EXTERNAL_METHOD, external_digest, external_meta, zero_structure
from robustsparse.sparsity import layer_sparsity_table

__all__ = [
    "ModelCard",
    "FORMATS",
    "EXTERNAL_METHOD",
    "read_model_card",
    "load_external",
    "load_external_model",
    "import_external",
    "is_external",
    "load_external_folder",
    "fold_torch_prune",
    "detect_format",
    "zero_structure",
]


def _dataset_info(card: ModelCard) -> DatasetInfo:
    bundle = load_dataset(card.dataset, root=card.data_root, augment=False, image_size=card.image_size)
    return bundle.info


def load_external_model(card: ModelCard, info: DatasetInfo | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """The card's model (eval mode, CPU, taking [0, 1] images) and its metadata."""
    info = info if info is not None else _dataset_info(card)
    model, masks, fmt = load_external(card, info)
    return model, external_meta(card, model, masks, info, fmt)


def import_external(card: ModelCard, models_dir: str | Path) -> Path:
    """Write the model folder `<models_dir>/<card.model_id>` of an external model; return it.

    The folder holds meta.json (with the card and the file's digest) and layer_sparsity.csv; the
    weights stay where they are.
    """
    info = _dataset_info(card)
    model, masks, fmt = load_external(card, info)
    meta = external_meta(card, model, masks, info, fmt)
    folder = Path(models_dir) / card.model_id
    folder.mkdir(parents=True, exist_ok=True)
    write_csv_atomic(folder / LAYER_SPARSITY_FILE, layer_sparsity_table(model, masks or None))
    write_json_atomic(folder / META_FILE, meta)
    return folder


def is_external(meta: dict[str, Any]) -> bool:
    """Was this model folder written by `import_external`?"""
    return meta.get("method") == EXTERNAL_METHOD and isinstance(meta.get("external"), dict)


def load_external_folder(meta: dict[str, Any], device: torch.device | str = "cpu") -> nn.Module:
    """The model of an imported folder, from the card in its metadata.

    Raises:
        CheckpointError: the model file changed since it was imported (import it again).
    """
    recorded = {k: v for k, v in meta["external"].items() if k not in ("format", "torch_prune_masks")}
    card = ModelCard.from_mapping(recorded)
    if external_digest(card) != meta.get("config_digest"):
        raise CheckpointError(
            f"{card.weights} changed since it was imported as {meta['model_id']}; attack it again to re-import it"
        )
    stored = meta["data"]["info"]
    info = DatasetInfo(**{k: tuple(v) if isinstance(v, list) else v for k, v in stored.items()})
    model, _, _ = load_external(card, info)
    return model.to(device)
