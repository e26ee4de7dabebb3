"""Rebuild a fine-tuned cross-modal model from its self-describing directory (no pickle)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from components.bodies import load_body
from components.checkpoints import load_checkpoint
from components.errors import CheckpointError
from components.model import CrossModalModel, SequenceEmbedder

__all__ = ["load_model_dir", "predict_array"]


def load_model_dir(directory: str | Path) -> CrossModalModel:
    """Build the architecture from ``config.json`` and ``body/config.json``, then load weights."""
    directory = Path(directory)
    try:
        config = json.loads((directory / "config.json").read_text())
        emb = config["embedder"]
    except (OSError, json.JSONDecodeError, KeyError) as exc:
        raise CheckpointError(f"{directory} is not a recraft model directory: {exc}") from exc
    body = load_body(directory / "body", pretrained=False)
    embedder = SequenceEmbedder(
        emb["in_channels"],
        emb["length"],
        emb["d"],
        emb["max_tokens"],
        torch.zeros(body.max_positions, emb["d"]),
        emb["overlap"],
        motif_kernel=emb.get("motif_kernel"),
    )
    model = CrossModalModel(embedder, body, config["n_out"])
    load_checkpoint(directory, model, {"kind": "cross_modal_model"})
    return model.eval()


@torch.no_grad()
def predict_array(model: CrossModalModel, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Logits (N, K) for inputs (N, C, L) already prepared like the training data."""
    expected = (model.embedder.proj.in_channels, model.embedder.length)
    if x.ndim != 3 or tuple(x.shape[1:]) != expected:
        raise CheckpointError(f"inputs have shape {x.shape}; this model expects (N, {expected[0]}, {expected[1]})")
    x = np.ascontiguousarray(x, dtype=np.float32)
    return torch.cat([model(torch.from_numpy(x[i : i + batch_size])) for i in range(0, len(x), batch_size)]).numpy()
