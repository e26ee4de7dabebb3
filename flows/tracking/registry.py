"""The MLflow model registry: log the fine-tuned model (pyfunc from code + safetensors) and manage
its alias; read a registered version back (its lineage, its artifacts)."""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from components.data import PreparedMeta
from components.errors import UserError
from flows.settings import Settings, redact, sqlite_file
from flows.tracking.runs import WORKSPACE_TAG, use_tracking_uri

__all__ = ["log_and_register", "CHAMPION", "model_lineage", "download_model", "pyfunc_artifacts"]

CHAMPION = "champion"
_PKG_ROOT = Path(__file__).resolve().parents[2]


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
        python_model=str(_PKG_ROOT / "flows" / "tracking" / "pyfunc.py"),
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


def model_lineage(spec: str, settings: Settings) -> dict[str, Any]:
    """What made a registered model version: ``spec`` is ``NAME@ALIAS`` or ``NAME/VERSION``
    (``models:/`` optional). Returns the version, its run and pipeline run, the lineage tags
    (:mod:`flows.lineage`: commit, dirty flag, DVC hashes), the pipeline run's params and its
    dataset inputs.

    Raises:
        UserError: no such store, model, alias or version (the message says which).
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = settings.resolved_tracking_uri()
    store = sqlite_file(uri)
    if store is not None and not store.is_file():  # opening it would create it
        hint = "run the pipeline, or set RECRAFT_TRACKING_URI"
        raise UserError(f"no MLflow tracking store at {redact(uri)}", hint=hint)
    name = spec.removeprefix("models:/")
    client = mlflow.MlflowClient(tracking_uri=uri)
    try:
        if "@" in name:
            name, alias = name.split("@", 1)
            version = client.get_model_version_by_alias(name, alias)
        elif "/" in name:
            name, number = name.rsplit("/", 1)
            version = client.get_model_version(name, number)
        else:
            raise UserError(f"model {spec!r} names no version", hint="use NAME@ALIAS or NAME/VERSION")
        run = client.get_run(version.run_id)
        parent_id = run.data.tags.get("mlflow.parentRunId")
        parent = client.get_run(parent_id) if parent_id else run
    except MlflowException as exc:
        raise UserError(f"cannot read model {spec!r} from {redact(uri)}: {exc.message.splitlines()[0][:200]}") from exc
    keys = ("mlflow.source.git.commit", "recraft.git.dirty", "recraft.dvc.prepared", "recraft.dvc.model")
    return {
        "model": name,
        "version": version.version,
        "aliases": sorted(version.aliases),
        "run_id": version.run_id,
        "pipeline_run_id": parent.info.run_id,
        "pipeline_run": parent.info.run_name,
        "status": parent.info.status,
        "workspace": parent.data.tags.get(WORKSPACE_TAG),
        "lineage": {k: version.tags.get(k, parent.data.tags.get(k)) for k in keys},
        "params": dict(sorted(parent.data.params.items())),
        "datasets": {
            next((t.value for t in d.tags if t.key == "mlflow.data.context"), d.dataset.name): {
                "digest": d.dataset.digest,
                "source": _uri(d.dataset.source),
            }
            for d in parent.inputs.dataset_inputs
        },
    }


def _uri(source: str) -> str:
    """A dataset source as logged by :meth:`Tracker.log_lineage` (``{"uri": ...}``), or as is."""
    try:
        return json.loads(source).get("uri", source)
    except (ValueError, AttributeError):
        return source


def download_model(spec: str, uri: str, tracking: str, scratch: Path) -> Path:
    """The artifacts of a ``models:/`` or ``runs:/`` URI (the user's ``spec``), resolved through
    the store at ``tracking``, downloaded under ``scratch``.

    Raises:
        UserError: MLflow cannot resolve or fetch it (the message names the URI and the store).
    """
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException

    use_tracking_uri(tracking)  # models:/ URIs resolve through the registry of this store
    try:
        return Path(download_artifacts(artifact_uri=uri, dst_path=str(scratch)))
    except MlflowException as exc:
        raise UserError(
            f"cannot load model {spec!r} from {tracking}: {exc.message.splitlines()[0][:200]}",
            hint=_registry_hint(),
        ) from exc


def _registry_hint() -> str:
    """``NAME@ALIAS`` of every registered model (or just the names when none has an alias), to
    pick from (best effort: the store may be down)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        models = mlflow.MlflowClient().search_registered_models(max_results=20)
        names = [f"{m.name}@{a}" for m in models for a in sorted(m.aliases)] or [m.name for m in models]
    except MlflowException:
        return "check RECRAFT_TRACKING_URI"
    return f"registered: {', '.join(names)}" if names else "the registry is empty: run the pipeline first"


def pyfunc_artifacts(mlmodel: Path) -> dict:
    """The python_function flavour's artifacts of an MLflow model (its ``MLmodel`` file)."""
    from mlflow.models import Model

    return Model.load(str(mlmodel)).flavors.get("python_function", {}).get("artifacts", {})
