"""robustsparse: what sparsity, and which sparsity structure, does to adversarial robustness.

Public API (the rest lives in the subpackages):
    load_config(path, overrides)       -> ExperimentConfig
    load_checkpoint(path, device)      -> (model taking [0,1] inputs, meta)
"""

from robustsparse._version import __version__
from robustsparse.checkpoints import load_checkpoint  # noqa: E402
from robustsparse.config import ExperimentConfig, load_config  # noqa: E402
from robustsparse.errors import CheckpointError, ConfigError, DatasetError, ModelError, RobustSparseError  # noqa: E402

__all__ = [
    "__version__",
    "load_checkpoint",
    "load_config",
    "ExperimentConfig",
    "RobustSparseError",
    "ConfigError",
    "DatasetError",
    "ModelError",
    "CheckpointError",
]
