"""Checkpoints: save a model (weights, masks, pruner state, metadata) and load it back safely.

A checkpoint file holds only tensors and plain data and is read with
`torch.load(weights_only=True)`, so loading never executes code from the file; a file that
carries a pickled Python object is refused. Beside it, `meta.json` is the human-readable copy
of the metadata. Loading rebuilds the architecture from the registry, checks that every
masked weight is zero and that the measured sparsity matches the metadata, and fails loudly
otherwise.

Example:
    >>> model, meta = load_checkpoint("runs/digits-quick/models/dense-s0")
    >>> meta["clean_acc"]
"""

from __future__ import annotations

import json
import logging
import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from reports.atomic import write_json_atomic
from reports.contract import CHECKPOINT_FILE, META_FILE
from robustsparse.errors import CheckpointError, ModelError
from robustsparse.models import NormalizedModel, create_model
from robustsparse.utils.atomic import torch_save_atomic
from robustsparse.utils.runtime import resolve_device

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "ModelSpec",
    "build_from_meta",
    "save_checkpoint",
    "load_checkpoint",
    "load_checkpoint_with_masks",
    "read_checkpoint",
    "read_meta",
    "resolve_checkpoint_path",
]

log = logging.getLogger(__name__)

FORMAT = "robustsparse.checkpoint"
FORMAT_VERSION = 1
# Measured and recorded sparsity must agree to within one weight in a million.
SPARSITY_TOLERANCE = 1e-6


@dataclass(frozen=True)
class ModelSpec:
    """What is needed to rebuild a model's architecture from the registry."""

    arch: str
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    #: `batchnorm`, or `mixture` with the `MixtureNorm2d` settings in `mixture` (layers, components...)
    norm: str = "batchnorm"
    mixture: Mapping[str, Any] = field(default_factory=dict)

    def build(self) -> NormalizedModel:
        """A freshly initialised model of this architecture (mixture layers unseeded)."""
        return create_model(
            self.arch,
            num_classes=self.num_classes,
            in_channels=self.in_channels,
            image_size=self.image_size,
            mean=self.mean,
            std=self.std,
            norm=self.norm,
            mixture=self.mixture,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the checkpoint (read back by `from_dict`)."""
        return {**asdict(self), "mean": list(self.mean), "std": list(self.std), "mixture": dict(self.mixture)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelSpec:
        return cls(
            arch=str(data["arch"]),
            num_classes=int(data["num_classes"]),
            in_channels=int(data["in_channels"]),
            image_size=int(data["image_size"]),
            mean=tuple(float(v) for v in data["mean"]),
            std=tuple(float(v) for v in data["std"]),
            # checkpoints written before mixture normalisation existed are batchnorm models
            norm=str(data.get("norm", "batchnorm")),
            mixture=dict(data.get("mixture") or {}),
        )


def build_from_meta(spec: ModelSpec, meta: Mapping[str, Any]) -> NormalizedModel:
    """The architecture of a saved model: `spec`'s, with the low-rank layers its metadata records
    (`sparsity.lowrank.ranks`, e.g. haloc's) factorised to their ranks."""
    from robustsparse.sparsity.lowrank import factorise_model, lowrank_ranks

    model = spec.build()
    ranks = lowrank_ranks(meta)
    if ranks:
        factorise_model(model, ranks)
    return model


def resolve_checkpoint_path(path: str | Path) -> Path:
    """A model folder or a checkpoint file -> the checkpoint file; CheckpointError if absent."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {str(path)!r} does not exist; pass a model folder (runs/<name>/models/<model_id>) or its {CHECKPOINT_FILE}"
        )
    return path


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    spec: ModelSpec,
    meta: Mapping[str, Any],
    *,
    masks: Mapping[str, torch.Tensor] | None = None,
    pruner_state: Mapping[str, Any] | None = None,
) -> Path:
    """Write the checkpoint file and `meta.json` beside it, both atomically.

    Args:
        path: the checkpoint file (`.../model.pt`).
        model: the model whose weights are saved (moved to CPU copies, not in place).
        spec: how to rebuild the architecture.
        meta: JSON-able metadata (model_id, arch, dataset, method, sparsity, accuracy...).
        masks: parameter name -> bool tensor (True = kept), for sparse models.
        pruner_state: the pruner's `state_dict()`, needed to resume pruning.

    Returns:
        The checkpoint path.
    """
    path = Path(path)
    meta = json.loads(json.dumps(dict(meta)))  # plain JSON data only, and fail early if not JSON-able
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_spec": spec.to_dict(),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "masks": {k: v.detach().cpu().bool().clone() for k, v in (masks or {}).items()},
        "pruner_state": dict(pruner_state or {}),
        "meta": meta,
    }
    torch_save_atomic(path, payload)
    # meta.json last: its presence marks a complete model folder.
    write_json_atomic(path.parent / META_FILE, meta)
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint file safely (no code execution) and check its format.

    Raises:
        CheckpointError: missing, corrupt, foreign, carrying pickled objects, or of a newer format.
    """
    path = resolve_checkpoint_path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "unsupported pickled content"
        raise CheckpointError(
            f"refusing to load {path}: it carries pickled Python objects that could execute code ({reason[:160]}); "
            "robustsparse checkpoints hold only tensors and plain data - re-create it with robustsparse train"
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as exc:
        raise CheckpointError(
            f"cannot read checkpoint {path}: the file is corrupt or truncated ({type(exc).__name__}); "
            "re-run the training that produced it (finished folders are skipped, this one will be redone)"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a robustsparse checkpoint (no '{FORMAT}' format marker); "
            "only files written by robustsparse train can be loaded"
        )
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {version!r}, this robustsparse reads up to {FORMAT_VERSION}; upgrade robustsparse"
        )
    for key in ("model_spec", "state_dict", "masks", "meta"):
        if not isinstance(payload.get(key), dict):
            raise CheckpointError(
                f"{path} is damaged: its '{key}' entry is missing or not a mapping; re-create the checkpoint"
            )
    return payload


def read_meta(path: str | Path) -> dict[str, Any]:
    """The metadata of a model folder or checkpoint (from meta.json, else from the checkpoint)."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    meta_file = folder / META_FILE
    if meta_file.is_file():
        try:
            return json.loads(meta_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise CheckpointError(
                f"{meta_file} is not valid JSON ({exc.msg} at line {exc.lineno}); delete the model folder and re-train"
            ) from None
    return dict(read_checkpoint(path)["meta"])


def load_checkpoint(
    path: str | Path, device: str | torch.device | None = "cpu"
) -> tuple[NormalizedModel, dict[str, Any]]:
    """Load a model for evaluation: rebuilt, weights and masks checked, in eval mode.

    Args:
        path: a model folder or its checkpoint file.
        device: where to put the model (CPU by default; "auto" picks CUDA when available).

    Returns:
        `(model, meta)`: the model takes images in [0,1] and returns logits.

    Raises:
        CheckpointError: see `load_checkpoint_with_masks`.
    """
    model, meta, _ = load_checkpoint_with_masks(path, device)
    return model, meta


def load_checkpoint_with_masks(
    path: str | Path, device: str | torch.device | None = "cpu"
) -> tuple[NormalizedModel, dict[str, Any], dict[str, torch.Tensor]]:
    """Like `load_checkpoint`, also returning the masks (empty for a dense model).

    Returns:
        `(model, meta, masks)`: masks map parameter names to bool tensors (True = kept).

    Raises:
        CheckpointError: the file is unsafe, corrupt or foreign, the weights do not fit the
            architecture, a masked weight is non-zero, or the sparsity disagrees with the metadata.
    """
    file = resolve_checkpoint_path(path)
    payload = read_checkpoint(file)
    meta = dict(payload["meta"])
    try:
        spec = ModelSpec.from_dict(payload["model_spec"])
        model = build_from_meta(spec, meta)
    except (KeyError, TypeError, ValueError, ModelError) as exc:
        raise CheckpointError(f"{file}: cannot rebuild its architecture from the stored model spec ({exc})") from None
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(
            f"{file}: weights do not fit architecture {spec.arch!r} ({first}); the file is foreign or damaged"
        ) from None
    masks = payload["masks"]
    _verify_masks(file, model, masks, meta)
    meta_file = file.parent / META_FILE
    if meta_file.is_file():
        side = read_meta(file.parent)
        for key in ("model_id", "achieved_sparsity"):
            if key in meta and side.get(key) != meta.get(key):
                raise CheckpointError(
                    f"{meta_file} says {key} = {side.get(key)!r} but the checkpoint says {meta.get(key)!r}; the folder mixes two models"
                )
    model.eval()
    return model.to(resolve_device(device)), meta, dict(masks)


def _verify_masks(file: Path, model: nn.Module, masks: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
    """Every masked weight is exactly zero, and the measured sparsity matches the metadata."""
    from robustsparse.sparsity import achieved_sparsity

    params = dict(model.named_parameters())
    for name, mask in masks.items():
        if name not in params:
            raise CheckpointError(
                f"{file}: mask for {name!r} names no parameter of the model; the file is foreign or damaged"
            )
        if mask.shape != params[name].shape or mask.dtype != torch.bool:
            raise CheckpointError(
                f"{file}: mask for {name!r} has shape {tuple(mask.shape)} / {mask.dtype}, expected {tuple(params[name].shape)} / bool"
            )
        leaked = int((params[name].detach()[~mask] != 0).sum())
        if leaked:
            raise CheckpointError(
                f"{file}: {leaked} masked weights of {name!r} are non-zero; the checkpoint was modified or saved before masking"
            )
    recorded = meta.get("achieved_sparsity")
    if recorded is None:
        return
    measured = achieved_sparsity(model, dict(masks))["prunable"] if masks else 0.0
    if abs(measured - float(recorded)) > SPARSITY_TOLERANCE:
        raise CheckpointError(
            f"{file}: measured sparsity {measured:.6f} does not match the metadata's achieved_sparsity {float(recorded):.6f}; "
            "the weights or masks were changed after saving"
        )
