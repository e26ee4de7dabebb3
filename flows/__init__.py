"""Orchestration: Prefect flows, MLflow tracking, params loading and the ``recraft`` CLI."""
