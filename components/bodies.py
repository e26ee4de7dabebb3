"""Pre-trained transformer bodies, split into the input embedding ``theta`` and the body ``g``.

``theta`` maps token ids to input embeddings ``u`` (B, T, d): word + position embeddings, with
the model's own LayerNorm. ``g`` is the encoder stack that reads ``u``. The cross-modal model
replaces ``theta`` by a target embedder ``phi`` and keeps ``g``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from components.errors import UserError

__all__ = ["Body", "BodySpec", "BODIES", "resolve_body", "load_body", "masked_mean"]


@dataclass(frozen=True)
class BodySpec:
    """A registered body: the asset that holds its weights (``None``: a hub id or local path)."""

    asset: str | None
    description: str


BODIES: dict[str, BodySpec] = {
    "minilm-l6": BodySpec(asset="minilm-l6", description="all-MiniLM-L6-v2: BERT, 6 layers, d=384, 22.7M"),
    "mpnet-base": BodySpec(asset="mpnet-base", description="all-mpnet-base-v2: MPNet, 12 layers, d=768, 110M"),
}


def resolve_body(name: str) -> BodySpec:
    """A registered name, or (for users who can reach a hub) any HF model id or local folder."""
    if name in BODIES:
        return BODIES[name]
    if "/" in name or Path(name).is_dir():
        return BodySpec(asset=None, description=f"Hugging Face model {name}")
    raise UserError(
        f"unknown body {name!r}; registered bodies: {', '.join(sorted(BODIES))}, "
        "or a Hugging Face model id (org/name) or a local model folder"
    )


def masked_mean(h: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over tokens of (B, T, d), counting only tokens where ``mask`` (B, T) is 1."""
    if mask is None:
        return h.mean(dim=1)
    m = mask.to(h.dtype).unsqueeze(-1)
    return (h * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)


class Body(nn.Module):
    """A BERT-family encoder seen as ``theta`` (:meth:`embed`) and ``g`` (:meth:`forward`).

    Args:
        model: a transformers model with ``.embeddings`` and ``.encoder`` (BERT, RoBERTa, MPNet...).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if not (hasattr(model, "embeddings") and hasattr(model, "encoder")):
            raise UserError(
                f"body {type(model).__name__} has no .embeddings/.encoder; "
                "only encoder models of the BERT family can be split into theta and g"
            )
        self.model = model
        self.hidden_size: int = model.config.hidden_size
        self.max_positions: int = model.config.max_position_embeddings

    @property
    def position_embeddings(self) -> torch.Tensor:
        """(max_positions, d) learned position embeddings, to initialise target embedders."""
        return self.model.embeddings.position_embeddings.weight

    @property
    def input_norm(self) -> nn.LayerNorm:
        """The LayerNorm that ``theta`` applies to word + position (+ token type) embeddings."""
        return self.model.embeddings.LayerNorm

    @property
    def input_positions(self) -> torch.Tensor:
        """(P, d) what ``theta`` adds to a word embedding at each position before its LayerNorm:
        the position embeddings from the body's first position id (RoBERTa/MPNet start after
        the padding index) plus, where the body has them, the token-type-0 embedding."""
        emb = self.model.embeddings
        start = emb.padding_idx + 1 if getattr(emb, "padding_idx", None) is not None else 0
        positions = emb.position_embeddings.weight[start:]
        if getattr(emb, "token_type_embeddings", None) is not None:
            positions = positions + emb.token_type_embeddings.weight[0]
        return positions.detach()

    def embed(self, input_ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``theta``: (B, T) token ids to (B, T, d) input embeddings ``u``."""
        del mask  # word + position embeddings do not depend on the mask
        return self.model.embeddings(input_ids=input_ids)

    def forward(self, u: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``g``: (B, T, d) input embeddings to (B, T, d) hidden states; ``mask`` (B, T) 1 = real."""
        from transformers.masking_utils import create_bidirectional_mask

        attn = None
        if mask is not None:
            attn = create_bidirectional_mask(config=self.model.config, inputs_embeds=u, attention_mask=mask)
        # [0]: the last hidden state, whether the encoder returns a ModelOutput or a tuple (MPNet).
        return self.model.encoder(u, attention_mask=attn)[0]


def load_body(path_or_id: str | Path, n_layers: int | None = None, pretrained: bool = True) -> Body:
    """Load a body from a model folder (or hub id); optionally keep only the first ``n_layers``.

    Args:
        path_or_id: folder with ``config.json`` and weights, or a Hugging Face model id.
        n_layers: truncate the encoder to its first layers (small bodies for tests).
        pretrained: ``False`` builds the same architecture with random weights (``scratch``).
    """
    from transformers import AutoConfig, AutoModel

    try:
        config = AutoConfig.from_pretrained(str(path_or_id))
        if pretrained:
            model = AutoModel.from_pretrained(str(path_or_id), add_pooling_layer=False)
        else:
            model = AutoModel.from_config(config, add_pooling_layer=False)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load body from {path_or_id}: {exc}") from exc
    if n_layers is not None:
        model.encoder.layer = model.encoder.layer[:n_layers]
        model.config.num_hidden_layers = n_layers
    return Body(model)


def load_tokenizer(path_or_id: str | Path):
    """The body's tokenizer (for the text source corpus)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path_or_id))
