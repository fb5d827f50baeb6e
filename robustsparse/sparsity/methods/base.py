"""The method protocol: what a sparsification method declares, and the pruner it builds.

A method is one registered `Method`: its name, a one-line description, when its masks are
decided, the granularities it supports, the settings it decides itself, any extra trainable
state or loss term, and a factory for its pruner. The pruner is the object the trainer drives
(`Pruner`, the interface of `CampfirePruner`), so every method reuses the masks, accounting,
checkpoints, resume and export of the sparsity engine.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, Protocol

import torch

from robustsparse.sparsity.settings import ALL_GRANULARITIES, SparsityConfig, setting_error

__all__ = [
    "Method",
    "Pruner",
    "PrunerFactory",
    "When",
    "WHEN_VALUES",
    "setting_error",
    "refuse_foreign_settings",
    "state_to_cpu",
]

When = Literal["before_training", "during_training", "after_training"]
#: before_training: masks fixed at step 0 and never changed; during_training: masks change while
#: training, then freeze; after_training: masks decided on a trained model, then retrained.
WHEN_VALUES: tuple[str, ...] = ("before_training", "during_training", "after_training")


class Pruner(Protocol):
    """What the trainer drives (see `CampfirePruner` for the reference implementation).

    A pruner that changes the model's architecture while training (haloc's compact layers) also
    has `prepare_restore(state, optimizer)`: on resume the trainer calls it with the saved pruner
    state before loading the weights, so the model and the optimiser have the saved shapes.
    """

    masks: dict[str, torch.Tensor]
    current_target: float

    @property
    def frozen(self) -> bool: ...

    def step(self, global_step: int, optimizer: torch.optim.Optimizer | None = None) -> bool: ...

    def apply_(self, optimizer: torch.optim.Optimizer | None = None) -> None: ...

    def achieved(self) -> dict[str, float]: ...

    def granularity_info(self) -> dict[str, Any]: ...

    def metadata(self) -> dict[str, Any]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


#: (model, settings, optimizer steps per epoch, the model's seed) -> its pruner. A method with
#: `needs_data` also gets the keyword `example_batch=(inputs, labels)`: one training batch, or
#: `data_examples(settings)` training examples when the method declares that.
PrunerFactory = Callable[..., Pruner]


@dataclass(frozen=True)
class Method:
    """A sparsification method as the registry knows it.

    Attributes:
        name: the value of `sparsity.method`.
        description: one line for `robustsparse list methods`.
        when: when the masks are decided (`WHEN_VALUES`).
        granularities: the `sparsity.granularity` values it supports.
        build_pruner: the factory of its pruner.
        fixed_settings: settings the method decides itself (e.g. a one-shot schedule at
            step 0 for a method that decides before training); `SparsityConfig` fills them in
            on load, so ids, metadata and the written config show what was used.
        extra_state: `(pruner) -> optimizer` of the method's trainable state beyond the model's
            weights, held by the pruner (None: none). The training loop zeroes its gradients
            with the model's and steps it after every backward pass; the parameters and the
            optimiser state belong in `pruner.state_dict()`, so resume is exact.
        loss_term: `(pruner) -> tensor or None`, the extra loss of the latest training forward
            pass, added to the cross-entropy before backward (None that step: nothing added;
            None as the field: the method has none).
        resolve_settings: checks the method's own settings (the `<method>_...` fields of
            `SparsityConfig`) and returns the values to fill in (its defaults); called for every
            sparsity config, whatever its method, so it also refuses its settings given to another
            method (one-line `ConfigError`). None: the method has no settings of its own.
        needs_data: the factory takes `example_batch=(inputs, labels)`, one batch of training
            data drawn once by the trainer (e.g. `snip`'s sensitivities; `synflow` reads only
            the inputs' shape). False: the factory never sees data.
        data_examples: with `needs_data`, how many training examples `example_batch` holds,
            from the settings (e.g. `hybrid`'s sensitivity subset); the trainer draws them
            with the model's seed, so a resumed run draws the same. None: one training batch.
        holds_out: the `data_examples` examples are held out: the trainer trains the weights on
            the rest of the training split only (haloc's rank logits learn on them).
        trains_weights: `(pruner) -> bool`, asked before every optimizer step: False while the
            method trains only its own state (e.g. `hydra`'s score phase), and the trainer then
            does not step the model's optimiser (the weights and their optimiser state stay as
            they are; the learning-rate schedule still advances). None: the weights always train.
    """

    name: str
    description: str
    when: When
    granularities: tuple[str, ...]
    build_pruner: PrunerFactory
    fixed_settings: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    resolve_settings: Callable[[SparsityConfig], Mapping[str, Any]] | None = None
    extra_state: Callable[..., Any] | None = None
    loss_term: Callable[..., Any] | None = None
    needs_data: bool = False
    data_examples: Callable[[SparsityConfig], int] | None = None
    holds_out: bool = False
    trains_weights: Callable[..., bool] | None = None

    def __post_init__(self) -> None:
        if self.when not in WHEN_VALUES:
            raise ValueError(f"method {self.name!r}: when = {self.when!r}; expected one of {', '.join(WHEN_VALUES)}")
        if "\n" in self.description or not self.description.strip():
            raise ValueError(f"method {self.name!r}: the description must be one non-empty line")
        unknown = sorted(set(self.granularities) - set(ALL_GRANULARITIES)) + sorted(
            set(self.fixed_settings) - {f.name for f in dataclasses.fields(SparsityConfig)}
        )
        if unknown or not self.granularities:
            raise ValueError(f"method {self.name!r}: unknown granularities or settings {unknown} (or none given)")
        if self.data_examples is not None and not self.needs_data:
            raise ValueError(f"method {self.name!r}: data_examples is given but needs_data is false")
        if self.holds_out and self.data_examples is None:
            raise ValueError(f"method {self.name!r}: holds_out needs data_examples (how many to hold out)")
        # read-only, so a registered method cannot be changed behind the registry's back
        object.__setattr__(self, "fixed_settings", MappingProxyType(dict(self.fixed_settings)))


def refuse_foreign_settings(cfg: SparsityConfig, method: str, keys: Iterable[str]) -> None:
    """Refuse `method`'s own settings (`keys`) given to a config of another method.

    Raises:
        ConfigError: one of `keys` is set (not None) while `cfg.method` is not `method` (one line).
    """
    if cfg.method == method:
        return
    for key in keys:
        if getattr(cfg, key) is not None:
            raise setting_error(key, getattr(cfg, key), f"null unless method is {method!r}")


def state_to_cpu(value: Any) -> Any:
    """A copy of nested dicts / lists of tensors with every tensor on the CPU (a pruner's
    `state_dict` part: its own network, optimiser or records)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, dict):
        return {k: state_to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(state_to_cpu(v) for v in value)
    return copy.deepcopy(value)
