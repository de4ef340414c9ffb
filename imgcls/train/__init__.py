"""Training: the loop, optimizers and schedules, checkpoints and resume, devices."""

from imgcls.train.run import TrainResult, train

__all__ = ["TrainResult", "train"]
