"""A model card: what robustsparse needs to attack a model trained elsewhere.

Given as a small YAML file (`--model-card card.yaml`) or as command-line options (`--weights FILE
--arch torchvision:resnet18 --dataset cifar10 --mean ... --std ...`); both are checked like an
experiment file, with one line naming the bad key and what is allowed.

    weights: runs/elsewhere/resnet18.pth     # a state_dict, a torch.export program (.pt2) or TorchScript
    arch: torchvision:resnet18               # state_dicts only: torchvision:<name> or a robustsparse model
    dataset: cifar10                         # the test data (robustsparse list datasets)
    data_root: data
    num_classes: 10                          # default: the dataset's
    mean: [0.4914, 0.4822, 0.4465]           # the normalisation the model expects; [0, 0, 0] and
    std: [0.2470, 0.2435, 0.2616]            # [1, 1, 1] for a model that takes [0, 1] images itself
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from robustsparse.config import dataclass_from_mapping
from robustsparse.errors import ConfigError

__all__ = ["ModelCard", "FORMATS", "read_model_card", "TORCHVISION_PREFIX"]

FORMATS: tuple[str, ...] = ("auto", "state_dict", "pt2", "torchscript")
TORCHVISION_PREFIX = "torchvision:"


def _fail(key: str, value: Any, expected: str) -> None:
    raise ConfigError(f"model card error: {key} = {value!r} is not allowed; expected {expected}")


@dataclass(frozen=True)
class ModelCard:
    """A model from outside the project, described well enough to attack it.

    Attributes:
        weights: the model file: a `state_dict` (plain, or in the `torch.nn.utils.prune` layout
            with `weight_orig` + `weight_mask`, which is folded into plain weights), a
            `torch.export` program (`.pt2`) or a TorchScript file. Never unpickled as Python
            objects: state dicts load with `weights_only=True`, programs with their own loaders.
        dataset: the registered dataset whose test split is attacked.
        mean, std: the per-channel normalisation the model expects; robustsparse feeds [0, 1]
            images through `Normalize(mean, std)` first. Required: a missing value is an error,
            never a guess (give zeros and ones for a model that takes [0, 1] images).
        arch: for a state dict, `torchvision:<name>` (any `torchvision.models` builder) or a
            robustsparse model name; programs carry their own graph and take none.
        format: `auto` (from the file: `.pt2`, TorchScript's zip layout, else a state dict) or
            one of `state_dict`, `pt2`, `torchscript`.
        num_classes: the logits the model returns (default: the dataset's).
        name: the model id in results (default: the file's stem).
        data_root: where the dataset lives.
        image_size: resize the test images to this side (default: the dataset's own size).
    """

    weights: str
    dataset: str
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    arch: str | None = None
    format: Literal["auto", "state_dict", "pt2", "torchscript"] = "auto"
    num_classes: int | None = None
    name: str | None = None
    data_root: str = "data"
    image_size: int | None = None

    def __post_init__(self) -> None:
        from robustsparse.data import list_datasets

        if self.dataset not in list_datasets():
            _fail("dataset", self.dataset, "one of " + ", ".join(list_datasets()))
        for key in ("mean", "std"):
            value = getattr(self, key)
            if value is None:
                raise ConfigError(
                    f"model card error: {key} is missing; give the per-channel normalisation the model expects "
                    "(mean: [0, 0, 0] and std: [1, 1, 1] for a model that takes [0, 1] images)"
                )
            if not value or not all(math.isfinite(v) for v in value):
                _fail(key, list(value), "a list of finite numbers, one per input channel")
        if len(self.mean) != len(self.std):
            _fail("std", list(self.std), f"as many values as mean ({len(self.mean)})")
        if any(v <= 0 for v in self.std):
            _fail("std", list(self.std), "positive values")
        if self.num_classes is not None and self.num_classes < 1:
            _fail("num_classes", self.num_classes, "a positive integer")
        if self.image_size is not None and self.image_size < 1:
            _fail("image_size", self.image_size, "a positive integer or null")
        if self.name is not None and (not self.name.strip() or "/" in self.name):
            _fail("name", self.name, "a non-empty name without '/'")

    @property
    def model_id(self) -> str:
        """The id results use: `name`, else the weights file's stem."""
        return self.name or Path(self.weights).stem

    @classmethod
    def from_mapping(cls, raw: Any, *, base: Path | None = None) -> ModelCard:
        """A card from a mapping (YAML); a relative `weights` path is taken from `base`."""
        card = dataclass_from_mapping(cls, raw, "model card")
        if base is not None and not Path(card.weights).is_absolute():
            card = cls(**{**card.__dict__, "weights": str(base / card.weights)})
        return card


def read_model_card(path: str | Path) -> ModelCard:
    """Read and check a YAML model card (a relative `weights` path is relative to the card).

    Raises:
        ConfigError: unreadable YAML, unknown key, wrong type or missing value (one line).
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"model card {path} cannot be read ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"model card {path} is not valid YAML ({type(exc).__name__})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"model card {path} must be a mapping of keys (weights, dataset, mean, std, ...)")
    return ModelCard.from_mapping(raw, base=path.parent)
