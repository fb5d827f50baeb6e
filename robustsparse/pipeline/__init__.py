"""The pipeline: run folder, training of every model, attack sweep, report; each stage resumable."""

from robustsparse.pipeline.experiment import RunSummary, attack_experiment, run_experiment
from robustsparse.pipeline.run_dir import default_run_dir, prepare_run_dir, read_run_config
from robustsparse.pipeline.training import load_experiment_data, train_experiment

__all__ = [
    "RunSummary",
    "attack_experiment",
    "run_experiment",
    "default_run_dir",
    "prepare_run_dir",
    "read_run_config",
    "load_experiment_data",
    "train_experiment",
]
