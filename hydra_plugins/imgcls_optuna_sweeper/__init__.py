"""imgcls's Hydra sweeper on Optuna (`hydra/sweeper=optuna`): see optuna_sweeper.py."""
