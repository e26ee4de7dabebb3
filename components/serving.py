"""Rebuild a fine-tuned cross-modal model from its self-describing directory (no pickle)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from components.bodies import load_body
from components.checkpoints import load_checkpoint
from components.errors import CheckpointError
from components.model import CrossModalModel, build_embedder

__all__ = ["load_model_dir", "predict_array", "trailing_mask"]


def load_model_dir(directory: str | Path) -> CrossModalModel:
    """Build the architecture from ``config.json`` and ``body/config.json``, then load weights."""
    directory = Path(directory)
    try:
        config = json.loads((directory / "config.json").read_text())
        emb = config["embedder"]
    except (OSError, json.JSONDecodeError, KeyError) as exc:
        raise CheckpointError(f"{directory} is not a recraft model directory: {exc}") from exc
    body = load_body(directory / "body", pretrained=False)
    embedder = build_embedder(emb, torch.zeros(body.max_positions, emb["d"]))
    model = CrossModalModel(embedder, body, config["n_out"], config["task_type"], tuple(config["target_shape"]))
    model.masked = bool(config.get("masked", False))
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
