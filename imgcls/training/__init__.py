"""Training: the loop (`loop`), optimizers and schedules (`optim`), checkpoints and resume
(`checkpoint`, `run_dir`), devices (`device`), and `run.train`, which ties them to data and models.

Submodules are imported directly (`from imgcls.training.run import train`) so that `evaluate`, which
uses the loop, and `train`, which uses `evaluate`, do not import each other at package level.
"""
