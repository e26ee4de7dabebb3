"""The model spec: what rebuilds a saved embedder or model, saved as its ``config.json``.

A fitted model directory holds the weights (safetensors), the body's own config and this spec;
:func:`components.model.build_embedder` and :func:`components.serving.load_model_dir` build the
architecture from it alone (no pickle, no params file).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from components.errors import CheckpointError

__all__ = ["EmbedderSpec", "ModelSpec"]


@dataclass(frozen=True)
class EmbedderSpec:
    """The target embedder ``phi``.

    Attributes:
        input_shape: one sample's shape: (C, L) for sequences, (C, H, W) for grids.
        d: the body's width (the token size).
        max_tokens: tokens per sample.
        overlap: stride divisor of the sequence patches (sequences only).
        motif_kernel: width of the motif convolution (0: none; sequences only).
        derivatives: finite differences added as channels (sequences only).
        difference_scales: the training split's std of each difference order, which scales it.
        init: ``body`` (the body's embedding LayerNorm and positions copied in) or ``fresh``.
        body: the registered body or model id it was built for.
        task: the task it was trained on (checked when the weights are loaded).
    """

    input_shape: tuple[int, ...]
    d: int
    max_tokens: int
    overlap: int = 1
    motif_kernel: int = 0
    derivatives: int = 0
    difference_scales: tuple[float, ...] | None = None
    init: str = "fresh"  # configs saved before the key existed
    body: str | None = None
    task: str | None = None

    kind = "target_embedder"

    def to_json(self) -> dict[str, Any]:
        out = {"kind": self.kind, **asdict(self)}
        out["input_shape"] = list(self.input_shape)
        if self.difference_scales is not None:
            out["difference_scales"] = list(self.difference_scales)
        return out

    @classmethod
    def from_json(cls, raw: Any, where: str) -> EmbedderSpec:
        """The spec a ``config.json`` (or its ``embedder`` entry) holds.

        Raises:
            CheckpointError: a required key is missing or a value has the wrong type; the message
                names ``where`` and the key.
        """
        values = _known(cls, raw, where, required=("input_shape", "d", "max_tokens"))
        values["input_shape"] = tuple(values["input_shape"])
        if values.get("difference_scales") is not None:
            values["difference_scales"] = tuple(values["difference_scales"])
        return cls(**values)


@dataclass(frozen=True)
class ModelSpec:
    """The fine-tuned model ``phi + g + h_t``.

    Attributes:
        task: the task it was trained on.
        task_type: picks the head, the loss and the outputs.
        n_out: the head's outputs per position (classes, labels or target channels).
        target_shape: the target's shape after the head (regression and fields).
        masked: trained on padded sequences (a mask marks the real steps).
        embedder: ``phi``'s spec.
        n_layers: the body's encoder layers kept (None: all).
        linear_skip: a ridge map is added to the output (real-valued targets).
    """

    task: str
    task_type: str
    n_out: int
    embedder: EmbedderSpec
    target_shape: tuple[int, ...] = ()
    masked: bool = False
    n_layers: int | None = None
    linear_skip: bool = False

    kind = "cross_modal_model"

    def to_json(self) -> dict[str, Any]:
        out = {"kind": self.kind, **{f.name: getattr(self, f.name) for f in fields(self)}}
        out["embedder"] = self.embedder.to_json()
        out["target_shape"] = list(self.target_shape)
        return out

    @classmethod
    def read(cls, path: str | Path) -> ModelSpec:
        """The spec in a model directory's ``config.json`` at ``path``.

        Raises:
            CheckpointError: the file is missing or unreadable, or a key is missing (named).
        """
        try:
            raw = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: not a readable model config ({type(exc).__name__}: {exc})") from exc
        values = _known(cls, raw, str(path), required=("task", "task_type", "n_out", "embedder"))
        values["embedder"] = EmbedderSpec.from_json(values["embedder"], f"{path} (embedder)")
        values["target_shape"] = tuple(values.get("target_shape") or ())
        return cls(**values)


def _known(cls: type, raw: Any, where: str, required: tuple[str, ...]) -> dict[str, Any]:
    """The keys of ``raw`` that ``cls`` has (``kind`` and unknown keys dropped), the required ones checked."""
    if not isinstance(raw, dict):
        raise CheckpointError(f"{where}: expected a JSON object, found {type(raw).__name__}")
    missing = [k for k in required if k not in raw]
    if missing:
        raise CheckpointError(f"{where}: key {missing[0]!r} is missing; a {cls.kind} config needs {list(required)}")
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in raw.items() if k in names}
