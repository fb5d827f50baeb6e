"""Experiment configuration: frozen typed sections (`schema`) and YAML reading/writing (`loader`)."""

from robustsparse.config.loader import (
    apply_overrides,
    config_digest,
    config_from_dict,
    config_to_dict,
    dataclass_from_mapping,
    dump_config,
    experiment_digest,
    load_config,
)
from robustsparse.config.schema import (
    AdversarialTrainingConfig,
    AttackConfig,
    DataConfig,
    ExecutionConfig,
    ExperimentConfig,
    JobResources,
    ModelConfig,
    SparsityConfig,
    TrainConfig,
)

__all__ = [
    "AdversarialTrainingConfig",
    "AttackConfig",
    "DataConfig",
    "ExecutionConfig",
    "ExperimentConfig",
    "JobResources",
    "ModelConfig",
    "SparsityConfig",
    "TrainConfig",
    "apply_overrides",
    "config_digest",
    "config_from_dict",
    "config_to_dict",
    "dataclass_from_mapping",
    "dump_config",
    "experiment_digest",
    "load_config",
]
