"""The experiment configuration: frozen, typed sections that an experiment file is validated into.

Every section is a frozen dataclass whose type hints are the schema: `config.loader` checks
unknown keys, types and `Literal` vocabularies generically from them, and each section's
`__post_init__` checks what types cannot say (ranges, cross-field rules).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal

from robustsparse.errors import ConfigError
from robustsparse.sparsity.lr_modes import check_lr_mode
from robustsparse.sparsity.settings import CHANNEL_GRANULARITIES, SparsityConfig

__all__ = [
    "DataConfig",
    "ModelConfig",
    "TrainConfig",
    "AdversarialTrainingConfig",
    "AttackConfig",
    "ExecutionConfig",
    "JobResources",
    "ExperimentConfig",
    "SparsityConfig",
]


def _require(condition: bool, key: str, value: Any, expected: str) -> None:
    if not condition:
        raise ConfigError(f"config error: {key} = {value!r} is not allowed; expected {expected}")


@dataclass(frozen=True)
class DataConfig:
    """Which dataset, where it lives, and how it is read.

    Attributes:
        dataset: a name from `robustsparse list datasets`.
        root: folder holding the dataset files (for `imagefolder`: the folder with train/ and test/).
        download: let torchvision download the files when they are missing.
        augment: apply the dataset's standard training augmentation.
        split_seed: seed of the train/test split where the dataset has none (digits).
        image_size: resize images to this size (None: the dataset's own size).
        num_workers: DataLoader worker processes.
        train_examples: train on this many training examples (a fixed subset spread evenly over
            the split; None: all) - for quick runs on a CPU budget.
        test_examples: the trainer's test pass (every epoch, and the `clean_acc` of meta.json)
            reads this many test examples (a fixed subset spread evenly over the split; None:
            all) - for CPU budgets, where a full test pass per epoch can cost more than the
            epoch. The attack sweep draws its own examples (`attack.n_examples`) from the
            whole test split either way.
        label: the name results and reports use for the data (e.g. "CIFAR-10 (JPEG)" for the
            ImageFolder copy); None: the dataset's registry name.
        device_cache: `imagefolder` only: decode every image once into a uint8 tensor cache
            (saved in `<root>/.robustsparse-cache/`), keep it on the training device and crop and
            flip whole batches there, so loader processes do not starve a GPU (`data.device_cache`
            module). Same augmentation semantics, other random draws: part of the model's digest
            when true.
    """

    dataset: str = "digits"
    root: str = "data"
    download: bool = False
    augment: bool = True
    split_seed: int = 0
    image_size: int | None = None
    num_workers: int = 0
    train_examples: int | None = None
    test_examples: int | None = None
    label: str | None = None
    device_cache: bool = False

    def __post_init__(self) -> None:
        from robustsparse.data import list_datasets

        allowed = list_datasets()
        _require(self.dataset in allowed, "data.dataset", self.dataset, "one of " + ", ".join(allowed))
        _require(self.num_workers >= 0, "data.num_workers", self.num_workers, "an integer >= 0")
        _require(
            not self.device_cache or self.dataset == "imagefolder",
            "data.device_cache",
            self.device_cache,
            f"false for dataset {self.dataset!r} (the device cache reads class folders: dataset imagefolder)",
        )
        _require(
            self.image_size is None or self.image_size > 0,
            "data.image_size",
            self.image_size,
            "a positive integer or null",
        )
        _require(
            self.train_examples is None or self.train_examples > 0,
            "data.train_examples",
            self.train_examples,
            "a positive integer or null",
        )
        _require(
            self.test_examples is None or self.test_examples > 0,
            "data.test_examples",
            self.test_examples,
            "a positive integer or null",
        )


@dataclass(frozen=True)
class ModelConfig:
    """Which architecture (a name from `robustsparse list models`) and its normalisation layers.

    Attributes:
        arch: the architecture.
        norm: `batchnorm` (the architecture as it is) or `mixture`: the BatchNorm2d layers named
            by `mixture_layers` become `MixtureNorm2d` (Kalayeh & Shah's mixture normalisation,
            methods.md section 16) in every model of the experiment.
        mixture_layers: which BatchNorm2d layers: `all`, the first N in module order (an
            integer), or a list of module names (e.g. [net.bn1, net.bn2]; `robustsparse inspect`
            lists them).
        mixture_components: K, the Gaussian components per layer (the paper's choice; 3 by
            default as in methods.md).
        mixture_em_steps: EM iterations per training batch (ours, 2).
        mixture_scale_by_weight: keep the 1/sqrt(lambda_k) factor of the normalisation (ours,
            unverified in the paper: true).
        mixture_posterior_grad: gradients through the posteriors in training (ours, false).
        mixture_dense: with `norm: batchnorm`, also train for every seed a dense model with
            mixture normalisation (`dense-mixture-s<seed>`, method `dense-mixture`, from scratch
            with the dense model's training) next to the plain one, so one experiment compares both.

    The `mixture_*` settings are left out of a model's digest while `norm` is `batchnorm`, so
    configs that do not use them keep their finished models.
    """

    arch: str = "small_cnn"
    norm: Literal["batchnorm", "mixture"] = "batchnorm"
    mixture_layers: Literal["all"] | int | tuple[str, ...] = "all"
    mixture_components: int = 3
    mixture_em_steps: int = 2
    mixture_scale_by_weight: bool = True
    mixture_posterior_grad: bool = False
    mixture_dense: bool = False

    def __post_init__(self) -> None:
        from robustsparse.models import batchnorm_names, list_models

        allowed = list_models()
        _require(self.arch in allowed, "model.arch", self.arch, "one of " + ", ".join(allowed))
        _require(
            1 <= self.mixture_components <= 16,
            "model.mixture_components",
            self.mixture_components,
            "an integer in [1, 16]",
        )
        _require(self.mixture_em_steps >= 1, "model.mixture_em_steps", self.mixture_em_steps, "an integer >= 1")
        _require(
            not (self.mixture_dense and self.norm == "mixture"),
            "model.mixture_dense",
            self.mixture_dense,
            "false when model.norm is mixture (every model already has mixture normalisation)",
        )
        if self.norm == "mixture" or self.mixture_dense:
            names = batchnorm_names(self.arch)
            _require(
                bool(names),
                "model.norm" if self.norm == "mixture" else "model.mixture_dense",
                self.norm if self.norm == "mixture" else self.mixture_dense,
                f"batchnorm / false: {self.arch} has no BatchNorm2d layer to replace",
            )
            layers = self.mixture_layers
            if isinstance(layers, int):
                _require(
                    1 <= layers <= len(names),
                    "model.mixture_layers",
                    layers,
                    f"'all' or a count in [1, {len(names)}] ({self.arch} has {len(names)} BatchNorm2d layers)",
                )
            elif isinstance(layers, tuple):
                unknown = [name for name in layers if name not in names]
                _require(
                    bool(layers) and not unknown,
                    "model.mixture_layers",
                    list(layers),
                    f"'all', a count or BatchNorm2d names of {self.arch}: {', '.join(names)}",
                )

    def mixture_options(self) -> dict:
        """The `MixtureNorm2d` settings of this config (for `ModelSpec`)."""
        return {
            "layers": self.mixture_layers if isinstance(self.mixture_layers, (str, int)) else list(self.mixture_layers),
            "components": self.mixture_components,
            "em_steps": self.mixture_em_steps,
            "scale_by_weight": self.mixture_scale_by_weight,
            "posterior_grad": self.mixture_posterior_grad,
        }

    def weight_settings(self) -> dict:
        """The settings that determine a model's weights, for its digest: the `mixture_*` ones only
        with `norm: mixture` (so a batchnorm model's digest is what it was before they existed);
        `mixture_dense` never (it adds a model, it changes none)."""
        if self.norm == "batchnorm":
            return {"arch": self.arch}
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "mixture_dense"}


@dataclass(frozen=True)
class AdversarialTrainingConfig:
    """Optional adversarial training: the attack that crafts training examples, and the loss on them.

    Attributes:
        attack: `none`, or the attack that crafts the training examples (eps in pixel units):
            `fgsm`, `pgd` (random start) or `tpgd` (PGD on the KL divergence between the clean and
            the adversarial predictions: TRADES' inner maximisation, for `loss: trades` only).
        eps: perturbation budget, e.g. "8/255".
        steps: iterations for `pgd` and `tpgd` (step size eps / 4).
        ratio: for `loss: replace`, the share of each batch replaced by adversarial examples
            (1.0: all of it).
        loss: `replace` (the default; CE on the batch with its first `ratio` share replaced by
            adversarial examples); `madry` (PGD adversarial training, Madry et al. 2018: CE on the
            adversarial examples of the whole batch); `hybrid` (DNR, Kundu et al. 2021:
            `hybrid_weight` x CE(clean) + (1 - hybrid_weight) x CE(adversarial)); `trades` (Zhang et
            al. 2019: CE(clean) + `trades_beta` x KL(p_clean || p_adversarial), with `attack: tpgd`).
        hybrid_weight: the clean share of `loss: hybrid`, in [0, 1]; default 0.5 (DNR's beta, about
            0.5 in the paper: methods.md section 8, unverified). Null for the other losses.
        trades_beta: the KL weight of `loss: trades`, >= 0; default 6.0 (the paper's CIFAR-10
            value, 1/lambda = 6). Null for the other losses.
        plain_dense_control: also train, for every seed, a dense model with the same training
            budget and no adversarial training (`dense-plain-s<seed>`), shown in the results and
            the report as the reference a robust grid is measured against.
    """

    attack: Literal["none", "fgsm", "pgd", "tpgd"] = "none"
    eps: str = "8/255"
    steps: int = 7
    ratio: float = 0.5
    loss: Literal["replace", "madry", "hybrid", "trades"] = "replace"
    hybrid_weight: float | None = None
    trades_beta: float | None = None
    plain_dense_control: bool = False

    def __post_init__(self) -> None:
        _require(0.0 < self.ratio <= 1.0, "train.adversarial.ratio", self.ratio, "a number in (0, 1]")
        _require(self.steps >= 1, "train.adversarial.steps", self.steps, "an integer >= 1")
        from robustsparse.config.attack_entries import pixel_eps

        pixel_eps(self.eps, "train.adversarial.eps")
        if self.loss != "replace" and self.attack == "none":
            raise ConfigError(
                f"config error: train.adversarial.loss = {self.loss!r} needs an attack; "
                "set train.adversarial.attack (fgsm, pgd, or tpgd for trades)"
            )
        if (self.loss == "trades") != (self.attack == "tpgd"):
            raise ConfigError(
                "config error: train.adversarial.loss: trades and attack: tpgd go together "
                f"(TRADES crafts its examples on the KL divergence); got loss {self.loss!r} with attack {self.attack!r}"
            )
        for key, loss, default in (("hybrid_weight", "hybrid", 0.5), ("trades_beta", "trades", 6.0)):
            value = getattr(self, key)
            if self.loss != loss:
                _require(value is None, f"train.adversarial.{key}", value, f"no value: it is a setting of loss: {loss}")
            elif value is None:  # filled in, so the written config shows what was used
                object.__setattr__(self, key, default)
        if self.loss == "hybrid":
            _require(
                0.0 <= self.hybrid_weight <= 1.0,
                "train.adversarial.hybrid_weight",
                self.hybrid_weight,
                "a number in [0, 1]",
            )
        if self.loss == "trades":
            _require(
                0.0 <= self.trades_beta < float("inf"),
                "train.adversarial.trades_beta",
                self.trades_beta,
                "a finite number >= 0",
            )
        _require(
            not self.plain_dense_control or self.attack != "none",
            "train.adversarial.plain_dense_control",
            self.plain_dense_control,
            "false without adversarial training (the dense model is already plain)",
        )

    def weight_settings(self) -> dict[str, Any]:
        """The settings that determine the trained weights, for a job's digest.

        The settings added after `attack`, `eps`, `steps` and `ratio` appear only where they are
        in use (a loss other than `replace`; its own weight), so the digests of models trained
        before they existed, and of configs that leave them at their defaults, do not change.
        `plain_dense_control` adds a model and changes none, so it never appears.
        """
        settings: dict[str, Any] = {"attack": self.attack, "eps": self.eps, "steps": self.steps}
        if self.loss == "replace":
            settings["ratio"] = self.ratio
        else:
            settings["loss"] = self.loss
            if self.loss == "hybrid":
                settings["hybrid_weight"] = self.hybrid_weight
            if self.loss == "trades":
                settings["trades_beta"] = self.trades_beta
        return settings


@dataclass(frozen=True)
class TrainConfig:
    """How every model (dense or sparse) is trained.

    Attributes:
        epochs: total training epochs (for sparse models: including pruning and fine-tuning).
        optimizer: `sgd` (momentum, optional Nesterov) or `adamw`.
        lr_schedule: `constant`, `multistep` (milestones in epochs, factor gamma) or `cosine`.
        warmup_epochs: linear warm-up from 0 over this many epochs before the schedule.
        amp / channels_last: mixed precision (bfloat16 autocast) and channels-last memory
            format; both only take effect on CUDA.
        tensorboard: also write the training curves (train_log.csv's columns per epoch) as
            TensorBoard event files in each model folder's `tensorboard/` (needs the
            `tensorboard` extra). Does not change the weights, so not part of a model's digest.
    """

    epochs: int = 30
    batch_size: int = 64
    eval_batch_size: int = 512
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    lr_schedule: Literal["constant", "multistep", "cosine"] = "cosine"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    warmup_epochs: int = 0
    label_smoothing: float = 0.0
    amp: bool = True
    channels_last: bool = True
    tensorboard: bool = False
    adversarial: AdversarialTrainingConfig = field(default_factory=AdversarialTrainingConfig)

    def __post_init__(self) -> None:
        _require(self.epochs >= 1, "train.epochs", self.epochs, "an integer >= 1")
        _require(self.batch_size >= 1, "train.batch_size", self.batch_size, "an integer >= 1")
        _require(self.eval_batch_size >= 1, "train.eval_batch_size", self.eval_batch_size, "an integer >= 1")
        _require(self.lr > 0, "train.lr", self.lr, "a number > 0")
        _require(0.0 <= self.momentum < 1.0, "train.momentum", self.momentum, "a number in [0, 1)")
        _require(self.weight_decay >= 0, "train.weight_decay", self.weight_decay, "a number >= 0")
        _require(0.0 <= self.label_smoothing < 1.0, "train.label_smoothing", self.label_smoothing, "a number in [0, 1)")
        _require(
            0 <= self.warmup_epochs < self.epochs,
            "train.warmup_epochs",
            self.warmup_epochs,
            f"an integer in [0, {self.epochs})",
        )
        _require(
            list(self.milestones) == sorted(self.milestones) and all(0 < m < self.epochs for m in self.milestones),
            "train.milestones",
            list(self.milestones),
            f"increasing epochs inside (0, {self.epochs})",
        )
        _require(0.0 < self.gamma <= 1.0, "train.gamma", self.gamma, "a number in (0, 1]")


@dataclass(frozen=True)
class AttackConfig:
    """The attack sweep run on every model by `robustsparse run`.

    Attributes:
        specs: attack entries, each a mapping with `name` and its parameters; `eps` may be a
            list, which expands into one spec per value (e.g. {name: fgsm, eps: [1/255, 8/255]}).
        n_examples: evaluate on N test examples spread evenly over the test split, the same for
            every model (None: the whole test set).
        batch_size: attack batch size.
        seed: seed of the attacks' randomness (random starts, Square's sampling).
        sanity_checks: compute the gradient-masking sanity checks for every model.
    """

    specs: tuple[dict, ...] = ({"name": "fgsm", "eps": ["1/255", "2/255", "4/255", "8/255"]},)
    n_examples: int | None = 1000
    batch_size: int = 256
    seed: int = 0
    sanity_checks: bool = True

    def __post_init__(self) -> None:
        _require(
            self.n_examples is None or self.n_examples > 0,
            "attack.n_examples",
            self.n_examples,
            "a positive integer or null",
        )
        _require(self.batch_size >= 1, "attack.batch_size", self.batch_size, "an integer >= 1")
        self.attack_specs()  # validates every entry now, so a bad spec fails before any training

    def attack_specs(self) -> list:
        """The sweep as a flat list of `attacks.AttackSpec` (clean first)."""
        from robustsparse.config.attack_entries import specs_from_entries

        return specs_from_entries(self.specs, seed=self.seed)


@dataclass(frozen=True)
class JobResources:
    """What one Ray task of a kind (training or evaluation) asks the cluster for.

    Attributes:
        cpus: CPUs reserved for the task (fractions allowed).
        gpus: GPUs reserved for the task (0: CPU only; > 0: the task trains or attacks on `cuda`).
        memory_gb: host memory reserved for the task, in GB (10^9 bytes; Ray's `memory` resource:
            a scheduling reservation, not a limit enforced on the process); null: no reservation.
    """

    cpus: float = 1.0
    gpus: float = 0.0
    memory_gb: float | None = 2.0

    def check(self, where: str) -> None:
        """Raise a one-line ConfigError for a bad value; `where` is the section (`execution.train`)."""
        _require(self.cpus > 0, f"{where}.cpus", self.cpus, "a number > 0")
        _require(self.gpus >= 0, f"{where}.gpus", self.gpus, "a number >= 0 (0: CPU only)")
        _require(
            self.memory_gb is None or self.memory_gb > 0,
            f"{where}.memory_gb",
            self.memory_gb,
            "a number of GB > 0, or null for no reservation",
        )

    @property
    def memory_bytes(self) -> int | None:
        """The reservation in bytes, as Ray takes it (None: none)."""
        return None if self.memory_gb is None else int(self.memory_gb * 1e9)


@dataclass(frozen=True)
class EvalResources(JobResources):
    """`JobResources` of an evaluation task: 1 GB by default (an attack sweep holds one model and
    its test examples), also when a config sets only some of its keys."""

    memory_gb: float | None = 1.0


@dataclass(frozen=True)
class ExecutionConfig:
    """Where and how the jobs of a run execute. Never part of a model's digest or the run folder's
    identity: the same experiment gives the same files and results whichever executor runs it.

    Attributes:
        executor: `local` (one job after another in this process) or `ray` (every training and
            evaluation job a Ray task; needs the `ray` extra).
        ray_address: null starts an embedded Ray on this machine; `auto` or `HOST:PORT` joins a
            running cluster.
        ray_num_cpus: CPUs of the embedded Ray (null: the machine's); ignored when joining a cluster.
        worker_threads: torch threads in each Ray task (1: N tasks on N cores do not oversubscribe).
        train: resources of each training task (default 1 CPU, no GPU, 2 GB).
        eval: resources of each evaluation (attack sweep) task (default 1 CPU, no GPU, 1 GB).
    """

    executor: Literal["local", "ray"] = "local"
    ray_address: str | None = None
    ray_num_cpus: int | None = None
    worker_threads: int = 1
    train: JobResources = field(default_factory=JobResources)
    eval: EvalResources = field(default_factory=EvalResources)

    def __post_init__(self) -> None:
        _require(
            self.ray_address is None or bool(self.ray_address.strip()),
            "execution.ray_address",
            self.ray_address,
            "auto, HOST:PORT, or null for an embedded Ray",
        )
        _require(
            self.ray_num_cpus is None or self.ray_num_cpus >= 1,
            "execution.ray_num_cpus",
            self.ray_num_cpus,
            "an integer >= 1, or null for the machine's CPUs",
        )
        _require(self.worker_threads >= 1, "execution.worker_threads", self.worker_threads, "an integer >= 1")
        self.train.check("execution.train")
        self.eval.check("execution.eval")


@dataclass(frozen=True)
class ExperimentConfig:
    """A whole experiment: data, model, training, the sparsity grid, the attack sweep.

    `sparsity` holds one entry per sparse model setting after grid expansion (any sparsity
    key given as a list in the file expands into the product of the lists); it is empty for
    a dense-only experiment. The dense model is always trained for every seed.
    """

    name: str = "experiment"
    seeds: tuple[int, ...] = (0,)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sparsity: tuple[SparsityConfig, ...] = ()
    attack: AttackConfig = field(default_factory=AttackConfig)
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)

    def __post_init__(self) -> None:
        _require(
            bool(self.name) and "/" not in self.name and self.name not in (".", ".."),
            "name",
            self.name,
            "a non-empty name without '/'",
        )
        _require(
            len(self.seeds) >= 1 and len(set(self.seeds)) == len(self.seeds),
            "seeds",
            list(self.seeds),
            "a non-empty list of distinct integers",
        )
        for entry in self.sparsity:
            end = getattr(entry, "end_epoch", 0)
            _require(
                end <= self.train.epochs, "sparsity.end_epoch", end, f"an epoch <= train.epochs ({self.train.epochs})"
            )
            check_lr_mode(self.train, entry)  # hold / rewind that would silently be another mode
            if self.model.norm == "mixture":
                # A channel through MixtureNorm2d is not separable (its posteriors mix every channel)
                # and torch.fx cannot trace the layer's data-dependent branches: the channel-group
                # methods (filter/channel granularities, hybrid's filter groups) cannot run on it.
                _require(
                    entry.granularity not in CHANNEL_GRANULARITIES and entry.method != "hybrid",
                    "sparsity.granularity" if entry.method != "hybrid" else "sparsity.method",
                    entry.granularity if entry.method != "hybrid" else entry.method,
                    "an element-level granularity or method with model.norm: mixture (filter/channel pruning "
                    "couples channels through batch normalisation); or model.norm: batchnorm with model.mixture_dense",
                )
