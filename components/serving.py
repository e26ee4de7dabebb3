"""Rebuild a fine-tuned cross-modal model from its self-describing directory (no pickle)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from components.bodies import load_body
from components.checkpoints import load_checkpoint
from components.data import PreparedMeta, apply_normalisation
from components.errors import CheckpointError, DataError
from components.model import CrossModalModel, build_embedder
from components.spec import ModelSpec

__all__ = [
    "SERVING_FILE",
    "load_model_dir",
    "predict_array",
    "trailing_mask",
    "serving_files",
    "read_serving",
    "prepare_inputs",
    "output_arrays",
    "labelled_outputs",
    "RawInputModel",
]

#: What serving needs besides the architecture and the weights: how prepare treated the inputs.
SERVING_FILE = "serving.json"


def load_model_dir(directory: str | Path) -> CrossModalModel:
    """Build the architecture from ``config.json`` and ``body/config.json``, then load weights."""
    directory = Path(directory)
    spec = ModelSpec.read(directory / "config.json")
    body = load_body(directory / "body", pretrained=False)
    embedder = build_embedder(spec.embedder)
    model = CrossModalModel(embedder, body, spec.n_out, spec.task_type, spec.target_shape, linear_skip=spec.linear_skip)
    model.masked = spec.masked
    load_checkpoint(directory, model, {"kind": "cross_modal_model"})
    return model.eval()


def trailing_mask(x: np.ndarray) -> np.ndarray:
    """(N, L) mask of right-padded sequences: steps up to each sample's last non-zero step."""
    nonzero = (x != 0).any(axis=1)  # (N, L)
    last = np.where(nonzero.any(axis=1), x.shape[-1] - 1 - np.argmax(nonzero[:, ::-1], axis=1), 0)
    return np.arange(x.shape[-1])[None, :] <= last[:, None]


@torch.no_grad()
def predict_array(
    model: CrossModalModel, x: np.ndarray, mask: np.ndarray | None = None, batch_size: int = 256
) -> np.ndarray:
    """Model outputs for inputs prepared like the training data (normalised, padded).

    For a model trained on padded sequences, ``mask`` (N, L) marks the real steps; without it,
    each sample's steps up to its last non-zero one count as real (right padding).
    """
    expected = tuple(model.embedder.input_shape)
    if tuple(x.shape[1:]) != expected:
        raise CheckpointError(f"inputs have shape {x.shape}; this model expects (N, {', '.join(map(str, expected))})")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if mask is None and model.masked:
        mask = trailing_mask(x)
    out = []
    for i in range(0, len(x), batch_size):
        m = None if mask is None else torch.from_numpy(np.asarray(mask[i : i + batch_size], dtype=bool))
        out.append(model(torch.from_numpy(x[i : i + batch_size]), m))
    return torch.cat(out).numpy()


def serving_files(meta: PreparedMeta) -> dict[str, dict]:
    """The model directory's :data:`SERVING_FILE`, from the prepare stage's ``meta.json``.

    It holds the input normalisation prepare applied (channel mean and std fitted on the training
    inputs, and whether it was applied), the headline metric, the class names and the target
    statistics, so a model directory alone turns raw inputs into predictions.
    Pass it to ``save_checkpoint(..., extra_json=...)``.
    """
    keys = ("normalisation", "metric", "class_names", "target_stats")
    return {SERVING_FILE: {k: getattr(meta, k) for k in keys}}


def read_serving(directory: str | Path) -> dict:
    """The :data:`SERVING_FILE` of a model directory written by the fit stage."""
    path = Path(directory) / SERVING_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f"{path} is missing or unreadable, so the model's input normalisation is unknown",
            hint="re-run the fit stage (models written before serving.json existed lack it)",
        ) from exc


def prepare_inputs(
    x: np.ndarray,
    normalisation: dict,
    input_shape: tuple[int, ...],
    masked: bool,
    mask: np.ndarray | None = None,
    where: str = "inputs",
) -> tuple[np.ndarray, np.ndarray | None]:
    """Raw inputs -> the model's inputs, exactly as the prepare stage made the training data.

    Args:
        x: raw inputs (N, L), (N, C, L) or (N, C, H, W); (N, L) is one channel.
        normalisation: ``{"applied", "mean", "std"}`` from :data:`SERVING_FILE`.
        input_shape: the shape of one sample the model expects, ``(C, L)`` or ``(C, H, W)``.
        masked: the model was trained on right-padded sequences with a mask.
        mask: (N, L') real steps of padded sequences; without it, a masked model counts each
            sample's steps up to its last non-zero one as real.
        where: names the inputs in error messages (a file and its array).

    Returns:
        Normalised float32 inputs (N, *input_shape), and the (N, L) mask (``None`` if unmasked).
        Shorter sequences are right-padded to ``L`` when the model is masked.
    """
    if x.ndim == 2:  # (N, L): one channel, as in the bring-your-own-data format
        x = x[:, None, :]
    x = np.asarray(x, dtype=np.float32)
    expected = tuple(input_shape)
    pad = expected[-1] - x.shape[-1]
    if not (x.shape[1:] == expected or (masked and x.shape[1:-1] == expected[:-1] and pad > 0)):
        shorter = " (or shorter, padded)" if masked else ""
        raise DataError(f"{where} has samples of shape {x.shape[1:]}; this model expects {expected}{shorter}")
    if mask is not None and mask.shape != (len(x), x.shape[-1]):
        raise DataError(f"{where}: the mask has shape {mask.shape}; expected (N, L) = {(len(x), x.shape[-1])}")
    if masked and mask is None:
        mask = trailing_mask(x)
    if mask is not None:
        mask = np.pad(mask.astype(bool), ((0, 0), (0, max(pad, 0))))
    if pad > 0:
        x = np.pad(x, ((0, 0), (0, 0), (0, pad)))
    if normalisation["applied"]:
        x = apply_normalisation(x, normalisation, mask)
    return x, mask


def output_arrays(task_type: str, scores: np.ndarray, class_names: list[str]) -> dict[str, np.ndarray]:
    """What ``--output`` holds: ``predictions`` and, for classifiers, ``scores`` (probabilities).

    - binary / multiclass: class ids (N,), softmax probabilities (N, K), the class names (K,).
    - multilabel: 0/1 matrix (N, K) (logit > 0), sigmoid probabilities (N, K).
    - regression / field: predictions in the targets' units.
    """
    if task_type in ("binary", "multiclass"):
        z = scores - scores.max(axis=1, keepdims=True)
        probs = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        return {
            "predictions": scores.argmax(axis=1),
            "scores": probs,
            "class_names": np.asarray(class_names, dtype=str),
        }
    if task_type == "multilabel":
        return {"predictions": (scores > 0).astype(np.int64), "scores": 1.0 / (1.0 + np.exp(-scores))}
    return {"predictions": scores}


def labelled_outputs(task_type: str, scores: np.ndarray, class_names: list[str]) -> dict[str, np.ndarray]:
    """:func:`output_arrays` with ``class_names`` replaced by ``labels``, each row's class name:
    what the registered model returns."""
    out = output_arrays(task_type, scores, class_names)
    if "class_names" in out:
        out["labels"] = out.pop("class_names")[out["predictions"]]
    return out


class RawInputModel:
    """A model directory served on raw inputs: what the registered MLflow pyfunc calls.

    ``predict(x)`` takes raw inputs as a user holds them, (N, C, L) or (N, C, H, W) float32 (or
    (N, L) for one channel; sequences of a masked task may be shorter than the training length),
    normalises them as the prepare stage did (``serving.json``) and returns
    :func:`labelled_outputs`: ``predictions`` and ``labels`` and probabilities ``scores`` for
    classifiers; values in the targets' own units for regression and fields.
    """

    def __init__(self, directory: str | Path) -> None:
        self.model = load_model_dir(directory)
        self.serving = read_serving(directory)

    def predict(self, x: np.ndarray, mask: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Outputs for raw inputs ``x``; ``mask`` (N, L) marks real steps of padded sequences (without
        it, each sample's steps up to its last non-zero one)."""
        net = self.model
        x = np.asarray(x, dtype=np.float32)
        x, mask = prepare_inputs(x, self.serving["normalisation"], net.embedder.input_shape, net.masked, mask)
        return labelled_outputs(net.task_type, predict_array(net, x, mask), self.serving["class_names"])
