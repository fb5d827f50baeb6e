"""Load a model trained elsewhere (a `ModelCard`) as a module that takes [0, 1] images.

Nothing in a file is executed as Python: a state dict loads with `torch.load(weights_only=True)`,
a `torch.export` program with `torch.export.load`, a TorchScript file with `torch.jit.load`
(TorchScript's own interpreter). The model is then preceded by `Normalize(mean, std)` from the
card, so every attack works in pixel units as everywhere in robustsparse.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from robustsparse.data.info import DatasetInfo
from robustsparse.errors import CheckpointError, ConfigError, ModelError
from robustsparse.external.card import TORCHVISION_PREFIX, ModelCard
from robustsparse.models import NormalizedModel, create_model
from robustsparse.models.layers import Normalize

__all__ = ["load_external", "fold_torch_prune", "detect_format"]

ORIG, MASK = "_orig", "_mask"


def detect_format(path: Path) -> str:
    """`pt2`, `torchscript` or `state_dict`, from the file's name and layout."""
    if path.suffix == ".pt2":
        return "pt2"
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        # torch.jit.save writes <archive>/code/...; torch.save writes <archive>/data.pkl only
        if any("/code/" in name for name in names) and any(name.endswith("constants.pkl") for name in names):
            return "torchscript"
    return "state_dict"


def fold_torch_prune(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Fold `torch.nn.utils.prune`'s `p_orig` + `p_mask` pairs into plain `p = p_orig * p_mask`.

    Returns:
        `(state, masks)`: the plain state dict and the masks (bool, True = kept) by parameter name.

    Raises:
        CheckpointError: a `_mask` without its `_orig` (or the other way round), or shapes that differ.
    """
    plain = {k: v for k, v in state.items() if not (k.endswith(ORIG) or k.endswith(MASK))}
    masks: dict[str, torch.Tensor] = {}
    origs = {k[: -len(ORIG)] for k in state if k.endswith(ORIG)}
    mask_names = {k[: -len(MASK)] for k in state if k.endswith(MASK)}
    if origs != mask_names:
        odd = sorted(origs ^ mask_names)[0]
        raise CheckpointError(
            f"{odd!r} has only one of _orig and _mask: not a complete torch.nn.utils.prune state dict"
        )
    for name in sorted(origs):
        orig, mask = state[name + ORIG], state[name + MASK]
        if orig.shape != mask.shape:
            raise CheckpointError(f"{name}: _orig {tuple(orig.shape)} and _mask {tuple(mask.shape)} differ in shape")
        plain[name] = orig * mask
        masks[name] = mask.bool()
    return plain, masks


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unsafe pickle or corrupt: never executed, always refused
        raise CheckpointError(
            f"cannot load {path} as a state dict ({type(exc).__name__}); only tensors load, never Python objects"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):  # {"state_dict": ..., "epoch": ...}
        state = state["state_dict"]
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise CheckpointError(f"{path} is not a state dict (a mapping of parameter names to tensors)")
    if all(k.startswith("module.") for k in state):  # saved from DataParallel / DistributedDataParallel
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _build_net(card: ModelCard, info: DatasetInfo, num_classes: int) -> nn.Module:
    """The bare network named by `card.arch` (no normalisation), freshly initialised."""
    if not card.arch:
        raise ModelError(
            "a state dict needs its architecture: give arch (torchvision:<name>, e.g. torchvision:resnet18, "
            "or a robustsparse model from `robustsparse list models`)"
        )
    if card.arch.startswith(TORCHVISION_PREFIX):
        import torchvision

        name = card.arch[len(TORCHVISION_PREFIX) :]
        try:
            return torchvision.models.get_model(name, weights=None, num_classes=num_classes)
        except ValueError:
            raise ModelError(
                f"arch {card.arch!r}: torchvision has no model {name!r}; see torchvision.models.list_models()"
            ) from None
    size = card.image_size or info.image_size
    return create_model(
        card.arch,
        num_classes=num_classes,
        in_channels=info.in_channels,
        image_size=size,
        mean=(0.0,) * info.in_channels,
        std=(1.0,) * info.in_channels,
    ).net


class _FixedModeGraph(nn.Module):
    """A loaded program (`torch.export` or TorchScript) whose train / eval mode is fixed by its graph.

    An exported program's module refuses `.train()` / `.eval()`: the graph was traced in one mode
    and stays in it. The attacks switch models to eval mode and back; this wrapper takes the call
    without passing it down.
    """

    def __init__(self, graph: nn.Module) -> None:
        super().__init__()
        self.graph = graph

    def train(self, mode: bool = True) -> _FixedModeGraph:
        self.training = mode  # the graph's own mode cannot change
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.graph(x)


def _load_program(path: Path, fmt: str) -> nn.Module:
    try:
        if fmt == "pt2":
            return _FixedModeGraph(torch.export.load(str(path)).module())
        return torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as exc:
        raise CheckpointError(f"cannot load {path} as a {fmt} model ({type(exc).__name__})") from None


def _check_takes_the_data(model: nn.Module, card: ModelCard, info: DatasetInfo, num_classes: int) -> None:
    """One forward pass on a blank image of the dataset's shape: a misfit is one line, not a traceback."""
    size = card.image_size or info.image_size
    try:
        with torch.no_grad():
            logits = model(torch.zeros(2, info.in_channels, size, size))
    except Exception as exc:
        detail = " ".join(str(exc).split())[:200]
        raise ModelError(
            f"{card.weights} does not take {info.name} images ({info.in_channels}x{size}x{size}): {detail}"
        ) from None
    if tuple(logits.shape) != (2, num_classes):
        raise ModelError(
            f"{card.weights} returns logits of shape {tuple(logits.shape[1:])} per image; "
            f"{info.name} has {num_classes} classes (set num_classes if the model has a different number)"
        )


def load_external(card: ModelCard, info: DatasetInfo) -> tuple[NormalizedModel, dict[str, torch.Tensor], str]:
    """The card's model taking [0, 1] images (eval mode, CPU), its masks, and the format read.

    Args:
        card: the model card.
        info: the dataset the model is attacked on (its classes and input shape).

    Returns:
        `(model, masks, format)`: masks are those of a `torch.nn.utils.prune` state dict (empty
        otherwise; the zeros of the weights are counted by the sparsity accounting either way).

    Raises:
        CheckpointError: a missing, unsafe, corrupt or foreign file, or weights that do not fit.
        ModelError: an unknown or missing architecture.
    """
    path = Path(card.weights)
    if not path.is_file():
        raise CheckpointError(f"model file {str(path)!r} does not exist; check weights in the model card")
    fmt = detect_format(path) if card.format == "auto" else card.format
    if len(card.mean or ()) != info.in_channels:
        raise ConfigError(
            f"model card error: mean and std have {len(card.mean or ())} values; dataset {info.name!r} has "
            f"{info.in_channels} channels, give one value per channel"
        )
    num_classes = card.num_classes or info.num_classes
    masks: dict[str, torch.Tensor] = {}
    if fmt == "state_dict":
        state, masks = fold_torch_prune(_read_state(path))
        net = _build_net(card, info, num_classes)
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            detail = " ".join(str(exc).split())[:300]
            raise CheckpointError(
                f"{path}: the weights do not fit {card.arch} with {num_classes} classes ({detail})"
            ) from None
    else:
        if card.arch:
            raise ModelError(f"a {fmt} file carries its own graph: leave arch out of the model card")
        net = _load_program(path, fmt)
    model = NormalizedModel(Normalize(card.mean or (), card.std or ()), net).eval()
    _check_takes_the_data(model, card, info, num_classes)
    # names as the wrapped model has them, so the sparsity accounting reads them
    return model, {f"net.{name}": mask for name, mask in masks.items()}, fmt
