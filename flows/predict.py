"""``recraft predict``: a registered, logged or local model applied to a user's raw ``.npz``.

The model directory carries everything serving needs (architecture, weights, and in
``serving.json`` the input normalisation of the prepare stage), so raw inputs in the
bring-your-own-data layout go through exactly the preparation the training data went through.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from components.errors import DataError, UserError
from flows.settings import Settings, sqlite_file

__all__ = ["Inputs", "read_inputs", "resolve_model", "predict"]

_ALIAS = re.compile(r"^[^/@:]+@[^/@]+$")  # NAME@ALIAS, as the registry names a model version


@dataclass(frozen=True)
class Inputs:
    """Raw inputs ``x``, optional targets ``y`` and padding ``mask``; ``where`` names them in messages."""

    x: np.ndarray
    y: np.ndarray | None
    mask: np.ndarray | None
    where: str


def read_inputs(path: Path, split: str = "test") -> Inputs:
    """Read ``x_<split>`` (or ``x``), and if present ``y_<split>`` / ``y`` and ``mask_<split>`` / ``mask``.

    The layout is the bring-your-own-data ``.npz`` (:func:`components.user_data.load_npz`), so a
    user's data file works as it is. Never unpickles.
    """
    from components.data import validate_arrays
    from components.npzfile import read_npz

    if not path.exists():
        raise UserError(f"--input {path} does not exist")
    arrays = read_npz(path)

    suffix = f"_{split}" if f"x_{split}" in arrays else ""
    kx, ky, km = (f"{name}{suffix}" for name in ("x", "y", "mask"))
    if kx not in arrays:
        raise DataError(
            f"{path}: no array 'x_{split}' or 'x'; found {', '.join(sorted(arrays)) or 'no arrays'}",
            hint="store the raw inputs as x_test (or x), shaped (N, L), (N, C, L) or (N, C, H, W)",
        )
    x, y = arrays[kx], arrays.get(ky)
    if not np.issubdtype(x.dtype, np.number) or x.ndim not in (2, 3, 4):
        raise DataError(
            f"{path}: array {kx!r} has shape {x.shape} and dtype {x.dtype}; "
            "expected numbers shaped (N, L), (N, C, L) or (N, C, H, W)"
        )
    x = x[:, None, :] if x.ndim == 2 else x  # (N, L): one channel
    if y is not None:  # the dtypes the prepare stage gives targets (components.user_data.load_npz)
        if y.dtype != bool and not np.issubdtype(y.dtype, np.number):
            raise DataError(f"{path}: array {ky!r} has dtype {y.dtype}; expected integer labels or floats")
        integer = y.dtype == bool or np.issubdtype(y.dtype, np.integer)
        y = y.astype(np.int64) if integer else y.astype(np.float32)
    mask = arrays[km].astype(bool) if km in arrays else None
    where = f"{path} ({split})" if suffix else str(path)
    # Without targets only the inputs are checked (placeholder targets of the right length).
    validate_arrays(x, y if y is not None else np.zeros(len(x)), where, mask=mask)
    return Inputs(x, y, mask, where)


def resolve_model(spec: str, settings: Settings, scratch: Path) -> Path:
    """The self-describing model directory named by ``spec``.

    Args:
        spec: ``NAME@ALIAS`` or ``models:/...`` (the registry), ``runs:/RUN_ID/model`` (a run's
            logged model), or a path: a model directory (``models/model`` in a workspace) or a
            downloaded MLflow model.
        settings: where the tracking store is.
        scratch: an empty directory for downloads.
    """
    path = Path(spec)
    if path.exists() or not (spec.startswith(("models:/", "runs:/")) or _ALIAS.match(spec)):
        return _local_model_dir(path, spec)
    uri = spec if ":/" in spec else f"models:/{spec}"
    tracking = settings.resolved_tracking_uri()
    store = sqlite_file(tracking)
    if store is not None and not store.is_file():  # opening it would create it
        raise UserError(f"no MLflow tracking store at {tracking}", hint="run the pipeline, or set RECRAFT_TRACKING_URI")
    from flows.tracking.registry import download_model

    local = download_model(spec, uri, tracking, scratch)
    return _local_model_dir(local, spec)


def _local_model_dir(path: Path, spec: str) -> Path:
    """``path`` itself if it is a model directory; the ``model`` artifact of an MLflow model."""
    if (path / "config.json").is_file():
        return path
    if (path / "MLmodel").is_file():
        from flows.tracking.registry import pyfunc_artifacts

        artifacts = pyfunc_artifacts(path / "MLmodel")
        if "model" in artifacts and (path / artifacts["model"]["path"] / "config.json").is_file():
            return path / artifacts["model"]["path"]
        raise UserError(f"{spec!r} is an MLflow model but not a recraft model (no 'model' artifact)")
    raise UserError(
        f"--model {spec!r} is neither a model directory nor a model in the registry",
        hint="use NAME@ALIAS (e.g. recraft-dna@champion), runs:/RUN_ID/model, or a models/model directory",
    )


def _check_targets(y: np.ndarray, scores: np.ndarray, task_type: str, where: str) -> None:
    """Targets the model's outputs can be scored against: known labels, or the outputs' shape."""
    if task_type in ("binary", "multiclass"):
        if y.max() >= scores.shape[1]:
            raise DataError(f"{where}: array 'y' holds label {int(y.max())}; this model knows 0..{scores.shape[1] - 1}")
    elif y.shape[1:] != scores.shape[1:]:
        raise DataError(f"{where}: array 'y' has targets of shape {y.shape[1:]}; the model predicts {scores.shape[1:]}")


def predict(model: str, input_path: Path, output: Path, split: str, settings: Settings) -> dict[str, float]:
    """Predict for the raw inputs in ``input_path``; write ``output``; return metrics if it has targets.

    The metrics are those the evaluate stage reports for the task type, computed the same way, so
    the held-out test data gives back the evaluate stage's ``test/<metric>``. Nothing is written
    when the model, the inputs or their shapes are wrong.
    """
    from components.atomic import save_npz
    from components.data import validate_arrays
    from components.device import select_device
    from components.metrics import compute_metrics
    from components.serving import load_model_dir, output_arrays, prepare_inputs, read_serving
    from components.training import predict_scores

    if output.is_dir():
        raise UserError(f"--output {output} is a directory; expected a file name such as predictions.npz")
    inputs = read_inputs(input_path, split)
    device = select_device(settings.device)
    with tempfile.TemporaryDirectory(prefix="recraft-model-") as scratch:
        directory = resolve_model(model, settings, Path(scratch))
        serving = read_serving(directory)
        net = load_model_dir(directory)
    shape = net.embedder.input_shape
    x, mask = prepare_inputs(inputs.x, serving["normalisation"], shape, net.masked, inputs.mask, inputs.where)
    if inputs.y is not None:
        validate_arrays(x, inputs.y, inputs.where, net.task_type, mask)
    scores = predict_scores(net.to(device), x, device, mask=mask)
    metrics = {}
    if inputs.y is not None:
        _check_targets(inputs.y, scores, net.task_type, inputs.where)
        stats = serving["target_stats"]
        std = None if stats is None else np.asarray(stats["std"])
        metrics = compute_metrics(net.task_type, scores, inputs.y, std)
    arrays = output_arrays(net.task_type, scores, serving["class_names"])
    save_npz(output, **arrays, **{f"metrics/{k}": np.float64(v) for k, v in metrics.items()})
    return metrics
