"""The cross-modal model: target embedder ``phi`` + pre-trained body ``g`` + target head ``h_t``."""

from __future__ import annotations

import math

import torch
from torch import nn

from components.bodies import Body, masked_mean

__all__ = ["SequenceEmbedder", "patch_size", "CrossModalModel"]


def patch_size(length: int, max_tokens: int) -> int:
    """Smallest stride ``s`` with ``ceil(length / s) <= max_tokens``."""
    return max(1, math.ceil(length / max_tokens))


class SequenceEmbedder(nn.Module):
    """``phi`` for sequences: (B, C, L) -> (B, T, d) token embeddings, T = ceil(L / s).

    Conv1d(C, d, stride=s) patches the sequence, LayerNorm puts the tokens on the scale the body
    expects, and position embeddings initialised from the body's say where each patch is. With
    ``overlap=1`` the kernel equals the stride (ORCA's patching); ``overlap=k`` widens the kernel to
    ``k * s`` centred on each patch, so a motif that straddles a patch boundary is still seen whole.

    Args:
        in_channels: C.
        length: L (inputs are right-padded with zeros to a multiple of ``s``).
        d: the body's hidden size.
        max_tokens: upper bound on T.
        positions: (P, d) body position embeddings to copy, P >= T.
        overlap: kernel size as a multiple of the stride.
        motif_kernel: if set, a stride-1 convolution of this width followed by max-pooling over
            each patch replaces the strided patching (``overlap`` is then unused).
    """

    def __init__(
        self,
        in_channels: int,
        length: int,
        d: int,
        max_tokens: int,
        positions: torch.Tensor,
        overlap: int = 1,
        motif_kernel: int | None = None,
    ) -> None:
        super().__init__()
        self.stride = patch_size(length, max_tokens)
        self.n_tokens = math.ceil(length / self.stride)
        self.length = length
        self.motif_kernel = motif_kernel
        if motif_kernel is None:
            kernel, stride = self.stride * overlap, self.stride
            self._pad_left = (kernel - self.stride) // 2
            self._pad_right = kernel - self.stride - self._pad_left
        else:
            # Stride-1 convolution then max-pooling over each patch: a motif is detected at any
            # offset inside its patch (a strided kernel must learn each offset separately).
            kernel, stride = motif_kernel, 1
            self._pad_left = (motif_kernel - 1) // 2
            self._pad_right = motif_kernel - 1 - self._pad_left
        self.proj = nn.Conv1d(in_channels, d, kernel_size=kernel, stride=stride)
        self.norm = nn.LayerNorm(d)
        self.pos = nn.Parameter(positions[: self.n_tokens].detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Right-pad to T * s, then pad both sides for the kernel: exactly T outputs.
        tail = self.n_tokens * self.stride - x.shape[-1]
        x = nn.functional.pad(x, (self._pad_left, self._pad_right + tail))
        h = self.proj(x)  # (B, d, T) strided, or (B, d, T * s) with motif_kernel
        if self.motif_kernel is not None:
            h = nn.functional.max_pool1d(h, self.stride)
        u = h.transpose(1, 2)  # (B, T, d)
        return self.norm(u) + self.pos


class CrossModalModel(nn.Module):
    """``h_t(pool(g(phi(x))))``: logits (B, n_out) for (B, C, L) inputs."""

    def __init__(self, embedder: nn.Module, body: Body, n_out: int) -> None:
        super().__init__()
        self.embedder = embedder
        self.body = body
        self.head = nn.Linear(body.hidden_size, n_out)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, d) mean-pooled body output."""
        return masked_mean(self.body(self.embedder(x)), None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
