"""Training: optimizers and LR schedules, the epoch loop, jobs, and the resumable trainer."""

from robustsparse.train.jobs import TrainJob, experiment_jobs
from robustsparse.train.loop import loss_and_accuracy, train_one_epoch
from robustsparse.train.trainer import is_finished, train_job

__all__ = ["TrainJob", "experiment_jobs", "loss_and_accuracy", "train_one_epoch", "is_finished", "train_job"]
