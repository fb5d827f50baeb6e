"""Training jobs: one model to train (dense or sparse), its id, and the digest that identifies it.

An experiment expands into jobs: the dense model for every seed, then every sparse setting of
the grid for every seed. A job's digest covers exactly what determines its weights (data,
architecture, training, its sparsity settings, seed, its parent), so a finished model folder is
reused only when it was trained the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from reports.contract import CONTINUED_DENSE_METHOD, PLAIN_DENSE_METHOD
from robustsparse.config import (
    AdversarialTrainingConfig,
    DataConfig,
    ExperimentConfig,
    ModelConfig,
    SparsityConfig,
    TrainConfig,
    config_digest,
    config_to_dict,
)

__all__ = [
    "TrainJob",
    "experiment_jobs",
    "dense_job",
    "dense_continued_job",
    "dense_mixture_job",
    "MIXTURE_METHOD",
    "plain_dense_job",
    "sparse_job",
    "sparse_model_id",
    "CONTINUED_METHOD",
    "PLAIN_METHOD",
]

#: The method of the extra dense model with mixture normalisation (`model.mixture_dense`).
MIXTURE_METHOD = "dense-mixture"

#: The method of the dense control: the dense model trained again from itself for the sparse models'
#: epochs, so a sparse model fine-tuned from a dense parent is compared with an equal training budget.
CONTINUED_METHOD = CONTINUED_DENSE_METHOD
#: The method of the plain dense control of an adversarially trained grid
#: (`train.adversarial.plain_dense_control`): the dense model trained the same way without adversarial
#: training, the reference that shows what the robust training bought (named in reports.contract).
PLAIN_METHOD = PLAIN_DENSE_METHOD


@dataclass(frozen=True)
class TrainJob:
    """Everything needed to train one model.

    Attributes:
        model_id: folder name under `models/`, unique in the experiment.
        seed: the training seed.
        sparsity: the sparse settings, or None for the dense model.
        parent_id: the dense model this one starts from (None: from scratch / dense).
        variant: the grid settings other than granularity and target that tell this model
            apart from its siblings, e.g. "end_epoch=10,lr_mode=hold" ("" when none vary).
        reference_id: the dense model a sparse model is compared with (the dense control with
            the same training budget); None for dense models. Not part of the digest.
        dense_method: the method name of a dense model trained from scratch: `dense`,
            `MIXTURE_METHOD` for the extra dense model with mixture normalisation, or
            `PLAIN_METHOD` for the plain (not adversarially trained) dense control. Not part of
            the digest (the weights are those of the same training without the name).
    """

    model_id: str
    seed: int
    data: DataConfig
    model: ModelConfig
    train: TrainConfig
    sparsity: SparsityConfig | None = None
    parent_id: str | None = None
    variant: str = ""
    reference_id: str | None = None
    dense_method: str = "dense"

    @property
    def method(self) -> str:
        if self.sparsity is not None:
            return self.sparsity.method
        return self.dense_method if self.parent_id is None else CONTINUED_METHOD

    @property
    def digest(self) -> str:
        """Digest of what determines the trained weights (the parent included by its own digest)."""
        parts = {
            "seed": self.seed,
            "data": _data_part(self.data),
            # the mixture settings only count with norm: mixture (a batchnorm model's digest is unchanged)
            "model": self.model.weight_settings(),
            "train": _train_digest_part(self.train),
            # settings left unset (None: another method's settings, or derived ones) are left out,
            # so registering a method with new settings does not change finished models' digests
            "sparsity": None
            if self.sparsity is None
            else {k: v for k, v in config_to_dict(self.sparsity).items() if v is not None},
            "parent": self.parent_id,
        }
        return config_digest(parts)


def _data_part(data: DataConfig) -> dict:
    """The data settings that determine the weights.

    The display label does not; `device_cache` does (other random draws of the same augmentation)
    but is left out when off, so models trained before it existed keep their digests.
    """
    part = config_to_dict(replace(data, label=None))
    if not data.device_cache:
        part.pop("device_cache")
    return part


def _train_digest_part(train: TrainConfig) -> dict:
    """The training settings that determine the weights."""
    part = config_to_dict(train)
    del part["tensorboard"]  # writing curves for TensorBoard does not change the weights
    # the adversarial settings in use only, so adding a setting leaves finished models' digests alone
    part["adversarial"] = train.adversarial.weight_settings()
    return part


def dense_job(cfg: ExperimentConfig, seed: int) -> TrainJob:
    """The dense model of `seed`."""
    return TrainJob(f"dense-s{seed}", seed, cfg.data, cfg.model, cfg.train)


def dense_mixture_job(cfg: ExperimentConfig, seed: int) -> TrainJob:
    """The dense model of `seed` with mixture normalisation (`model.mixture_dense`): trained from
    scratch like the dense model, with the `model.mixture_*` settings."""
    model = replace(cfg.model, norm="mixture", mixture_dense=False)
    return TrainJob(f"{MIXTURE_METHOD}-s{seed}", seed, cfg.data, model, cfg.train, dense_method=MIXTURE_METHOD)


def dense_continued_job(cfg: ExperimentConfig, seed: int) -> TrainJob:
    """The dense control of `seed`: its dense model trained again for `train.epochs` from itself.

    Sparse models fine-tuned from the dense parent have had the parent's epochs plus their own;
    this model has had the same, with the same optimizer and learning-rate schedule (the
    standard one: it has no pruning window for `hold`/`rewind` to act on).
    """
    parent = dense_job(cfg, seed).model_id
    return TrainJob(f"{CONTINUED_METHOD}-s{seed}", seed, cfg.data, cfg.model, cfg.train, parent_id=parent)


def plain_dense_job(cfg: ExperimentConfig, seed: int) -> TrainJob:
    """The plain dense control of `seed`: the dense model's training without adversarial training.

    Same data, architecture, seed, epochs, optimizer and schedule as `dense_job`, with
    `train.adversarial` at its defaults (no attack): the reference for the robustness that the
    adversarial training of the dense model (and of the sparse models made from it) adds.
    """
    train = replace(cfg.train, adversarial=AdversarialTrainingConfig())
    return TrainJob(f"{PLAIN_METHOD}-s{seed}", seed, cfg.data, cfg.model, train, dense_method=PLAIN_METHOD)


def _level(target: float) -> str:
    percent = target * 100
    return f"{percent:g}".replace(".", "p")


_GRID_AXES = ("granularity", "target_sparsity", "method")


def _variant_items(sparsity: SparsityConfig, varying: tuple[str, ...]) -> list[tuple[str, str]]:
    items = []
    for key in varying:
        value = getattr(sparsity, key)
        if key not in _GRID_AXES and value is not None:  # null: unset here (another method's setting)
            items.append((key, "-".join(map(str, value)) if isinstance(value, tuple) else str(value)))
    return items


def sparse_model_id(sparsity: SparsityConfig, seed: int, varying: tuple[str, ...] = ()) -> str:
    """A readable id: method-granularity-level[-key+value for other varying settings]-sSEED.

    Example: `campfire-window-70-s0`, `campfire-filter-50-end_epoch10-s1`.
    """
    granularity = sparsity.granularity
    if granularity == "n:m":
        granularity = f"nm{sparsity.n}of{sparsity.m}"
    parts = [sparsity.method, granularity, _level(sparsity.target_sparsity)]
    parts += [f"{key}{text}".replace("/", "_").replace(":", "_") for key, text in _variant_items(sparsity, varying)]
    parts.append(f"s{seed}")
    return "-".join(parts)


def sparse_job(cfg: ExperimentConfig, sparsity: SparsityConfig, seed: int, varying: tuple[str, ...] = ()) -> TrainJob:
    """One sparse model: `sparsity` at `seed`, from its dense parent when `from_dense`.

    Its reference (what its changes are measured against) is the model with the same training
    budget: the dense control continued from the same parent, or the dense model when both
    train from scratch.
    """
    dense_id = dense_job(cfg, seed).model_id
    parent = dense_id if sparsity.from_dense else None
    reference = dense_continued_job(cfg, seed).model_id if sparsity.from_dense else dense_id
    variant = ",".join(f"{key}={text}" for key, text in _variant_items(sparsity, varying))
    return TrainJob(
        sparse_model_id(sparsity, seed, varying),
        seed,
        cfg.data,
        cfg.model,
        cfg.train,
        sparsity,
        parent,
        variant,
        reference,
    )


def _varying_keys(entries: tuple[SparsityConfig, ...]) -> tuple[str, ...]:
    """The settings that tell entries of the same method, granularity and level apart.

    Compared within each (method, granularity, target_sparsity): a method that decides a
    setting itself (e.g. `random`'s one-shot schedule) does not make that setting vary across
    the grid, nor does a setting derived from the level or the granularity (`n` of n:m,
    `psconv_kept`), which the id already shows.
    """
    by_method: dict[tuple[str, ...], list[SparsityConfig]] = {}
    for entry in entries:
        key = tuple(str(getattr(entry, axis)) for axis in _GRID_AXES)
        by_method.setdefault(key, []).append(entry)
    return tuple(
        f.name
        for f in fields(SparsityConfig)
        if any(len({getattr(e, f.name) for e in group}) > 1 for group in by_method.values())
    )


def experiment_jobs(cfg: ExperimentConfig) -> list[TrainJob]:
    """All jobs of an experiment in dependency order: dense models (with `model.mixture_dense`,
    also the dense models with mixture normalisation), dense controls, the sparse grid.

    The dense control of a seed (`dense_continued_job`) is trained when any sparse model
    continues from a dense parent; the plain dense control (`plain_dense_job`) when
    `train.adversarial.plain_dense_control` is set.
    """
    jobs = [dense_job(cfg, seed) for seed in cfg.seeds]
    if cfg.model.mixture_dense:
        jobs += [dense_mixture_job(cfg, seed) for seed in cfg.seeds]
    if cfg.train.adversarial.plain_dense_control:
        jobs += [plain_dense_job(cfg, seed) for seed in cfg.seeds]
    if any(sparsity.from_dense for sparsity in cfg.sparsity):
        jobs += [dense_continued_job(cfg, seed) for seed in cfg.seeds]
    varying = _varying_keys(cfg.sparsity)
    for sparsity in cfg.sparsity:
        for seed in cfg.seeds:
            jobs.append(sparse_job(cfg, sparsity, seed, varying))
    ids = [job.model_id for job in jobs]
    assert len(set(ids)) == len(ids), f"model ids collide: {ids}"  # the grid is de-duplicated on load
    return jobs
