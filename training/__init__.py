"""Survival models, evaluation, MLflow tracking and the model registry."""
