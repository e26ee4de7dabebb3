"""Log the fine-tuned model to MLflow (pyfunc from code + safetensors) and manage its alias."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import numpy as np

from components.data import PreparedMeta

__all__ = ["log_and_register", "CHAMPION"]

CHAMPION = "champion"
_PKG_ROOT = Path(__file__).resolve().parent.parent


def _requirements() -> list[str]:
    # Explicit requirements: MLflow's inference would import-scan the model (~9 s per call).
    return [f"{p}=={version(p)}" for p in ("torch", "transformers", "safetensors", "numpy", "mlflow")]


def _signature(meta: PreparedMeta):
    """Raw float32 inputs (N, C, L) or (N, C, H, W), the length free for masked (padded) tasks;
    the outputs of :class:`components.serving.RawInputModel` for the task type."""
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types.schema import Schema, TensorSpec

    from components.serving import labelled_outputs

    task_type, n = meta.task_type, 1
    scores_shape = [meta.n_out] if task_type not in ("regression", "field") else meta.target_shape
    if task_type == "field":
        scores_shape = [meta.target_shape[0], *meta.input_shape[1:]]
    outputs = labelled_outputs(task_type, np.zeros((n, *scores_shape), dtype=np.float32), meta.class_names or [])
    inferred = infer_signature(np.zeros((n, *meta.input_shape), dtype=np.float32), outputs)
    if not meta.masked:
        return inferred
    shape = (-1, meta.input_shape[0], -1)  # shorter sequences are right-padded by the model
    return ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.float32), shape)]), outputs=inferred.outputs)


def log_and_register(ctx, result: dict, meta: PreparedMeta, lineage: dict[str, str] | None = None) -> str:
    """Log the model in the active run, register a version, and move ``@champion`` if it is better.

    The version carries ``lineage`` (:func:`flows.lineage.lineage_tags`: the code's commit, the
    DVC hashes of the prepared data and of the model) as tags, beside its validation score.

    The alias moves only when this version's validation metric beats the current champion's
    (validation, never test; lower is better for error metrics). Returns the new version number.
    """
    import mlflow

    signature = _signature(meta)
    from components.tasks import task_slug

    name = ctx.settings.registered_model.format(task=task_slug(ctx.params.task))
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=str(_PKG_ROOT / "flows" / "mlflow_model.py"),
        artifacts={"model": str(ctx.layout.model_dir)},
        code_paths=[str(_PKG_ROOT / "components")],
        signature=signature,
        pip_requirements=_requirements(),
    )
    metric = meta.metric
    sign = 1.0 if meta.higher_is_better else -1.0
    score = float(result[f"val/{metric}"])
    mv = mlflow.register_model(info.model_uri, name)
    client = mlflow.MlflowClient()
    client.set_model_version_tag(name, mv.version, f"val/{metric}", str(score))
    client.set_model_version_tag(name, mv.version, "method", ctx.params.method)
    for key, value in (lineage or {}).items():
        client.set_model_version_tag(name, mv.version, key, value)
    try:
        current = client.get_model_version_by_alias(name, CHAMPION)
        best = sign * float(current.tags[f"val/{metric}"])
    except (mlflow.exceptions.MlflowException, KeyError, ValueError):
        best = -float("inf")
    if sign * score > best:
        client.set_registered_model_alias(name, CHAMPION, mv.version)
    return str(mv.version)
