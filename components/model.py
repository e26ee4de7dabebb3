"""The cross-modal model: target embedder ``phi`` + pre-trained body ``g`` + target head ``h_t``.

Embedders turn (B, C, L) sequences or (B, C, H, W) grids into (B, T, d) tokens and can *fold*
per-token outputs back onto the input's grid, which is how dense heads predict fields. A padding
mask (B, L) for sequences of unequal length becomes a token mask (B, T): padded steps never reach
the tokens, the body's attention or the pooling.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from components.bodies import Body, masked_mean
from components.spec import EmbedderSpec

__all__ = [
    "SequenceEmbedder",
    "GridEmbedder",
    "patch_size",
    "grid_patch_size",
    "CrossModalModel",
    "EMBEDDER_INITS",
    "build_embedder",
    "init_from_body",
    "head_outputs",
    "LinearSkip",
    "differences",
    "difference_stds",
]


def patch_size(length: int, max_tokens: int) -> int:
    """Smallest stride ``s`` with ``ceil(length / s) <= max_tokens``."""
    return max(1, math.ceil(length / max_tokens))


def grid_patch_size(height: int, width: int, max_tokens: int) -> int:
    """Smallest square patch ``p`` with ``ceil(H / p) * ceil(W / p) <= max_tokens``."""
    p = 1
    while math.ceil(height / p) * math.ceil(width / p) > max_tokens:
        p += 1
    return p


def differences(x: torch.Tensor, order: int) -> torch.Tensor:
    """(B, C, L) -> (B, C * (1 + order), L): ``x`` and its 1st..``order``-th finite differences
    along L (centred inside, one-sided at the two ends), stacked on the channel axis."""
    out, d = [x], x
    for _ in range(order):
        if d.shape[-1] < 2:
            d = torch.zeros_like(d)
        else:
            inner = (d[..., 2:] - d[..., :-2]) / 2
            d = torch.cat([d[..., 1:2] - d[..., :1], inner, d[..., -1:] - d[..., -2:-1]], dim=-1)
        out.append(d)
    return torch.cat(out, dim=1)


def difference_stds(x, order: int = 2) -> list[float]:
    """Spread of ``x`` (N, C, L) and of each of its differences up to ``order``: the scales that put
    them on one footing as inputs of ``phi`` (one number per order, over every channel and step)."""
    d = differences(torch.as_tensor(x, dtype=torch.float32), order)
    per_order = d.view(len(d), order + 1, -1, d.shape[-1]).transpose(0, 1).reshape(order + 1, -1)
    return [max(float(v), 1e-6) for v in per_order.std(dim=1)]


class SequenceEmbedder(nn.Module):
    """``phi`` for sequences: (B, C, L) -> (B, T, d) token embeddings, T = ceil(L / s).

    Conv1d(C, d, stride=s) patches the sequence; position embeddings initialised from the body's
    say where each patch is; a LayerNorm puts the tokens on the scale the body expects. With
    ``pos_in_norm`` (the default) the tokens are ``LayerNorm(conv(x) + pos)``, the body's own
    ``LayerNorm(word + position)`` with the convolution in place of the word embeddings, and
    :func:`init_from_body` copies the body's LayerNorm and positions into it; otherwise they are
    ``LayerNorm(conv(x)) + pos`` (fresh LayerNorm, tokens ~sqrt(d) from the origin). With
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
        pos_in_norm: add the positions before the LayerNorm (as the body does) or after it.
        derivatives: also read the 1st..k-th finite differences of the input (:func:`differences`)
            as channels, each divided by its spread ``difference_scales[j]`` (from the training
            inputs, :func:`difference_stds`); the model's input stays (B, C, L).
        difference_scales: k + 1 spreads, that of the input first.
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
        pos_in_norm: bool = False,
        derivatives: int = 0,
        difference_scales: list[float] | None = None,
    ) -> None:
        super().__init__()
        if derivatives and (difference_scales is None or len(difference_scales) != derivatives + 1):
            raise ValueError(f"derivatives={derivatives} needs {derivatives + 1} difference scales")
        self.derivatives = derivatives
        self.difference_scales = [float(v) for v in difference_scales] if derivatives else []
        # Per input channel of the convolution (channel j of order k is C * k + j). Not saved with
        # the weights: the scales live in the embedder's config, so a checkpoint's tensors stay
        # those of an embedder without differences.
        scales = torch.tensor(self.difference_scales, dtype=torch.float32).repeat_interleave(in_channels)
        self.register_buffer("_channel_scales", scales.view(1, -1, 1), persistent=False)
        self.pos_in_norm = pos_in_norm
        self.stride = patch_size(length, max_tokens)
        self.n_tokens = math.ceil(length / self.stride)
        self.length = length
        self.in_channels = in_channels
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
        self.proj = nn.Conv1d(in_channels * (1 + derivatives), d, kernel_size=kernel, stride=stride)
        self.norm = nn.LayerNorm(d)
        self.pos = nn.Parameter(positions[: self.n_tokens].detach().clone())

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.in_channels, self.length)

    @property
    def patch_numel(self) -> int:
        """Input positions covered by one token."""
        return self.stride

    def token_mask(self, mask: torch.Tensor | None) -> torch.Tensor | None:
        """(B, L) step mask -> (B, T) token mask: a token is real if any of its steps is."""
        if mask is None:
            return None
        tail = self.n_tokens * self.stride - mask.shape[-1]
        m = nn.functional.pad(mask.float(), (0, tail))
        return m.view(len(m), self.n_tokens, self.stride).amax(dim=-1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is not None:  # padded steps are zero, whatever the caller stored there
            x = x * mask.unsqueeze(1).to(x.dtype)
        if self.derivatives:
            x = differences(x, self.derivatives) / self._channel_scales.to(x.dtype)
        # Right-pad to T * s, then pad both sides for the kernel: exactly T outputs.
        tail = self.n_tokens * self.stride - x.shape[-1]
        x = nn.functional.pad(x, (self._pad_left, self._pad_right + tail))
        h = self.proj(x)  # (B, d, T) strided, or (B, d, T * s) with motif_kernel
        if self.motif_kernel is not None:
            h = nn.functional.max_pool1d(h, self.stride)
        u = h.transpose(1, 2)  # (B, T, d)
        return self.norm(u + self.pos) if self.pos_in_norm else self.norm(u) + self.pos

    def fold(self, t: torch.Tensor) -> torch.Tensor:
        """(B, T, C_out * s) per-token outputs -> (B, C_out, L) on the input's steps."""
        b = len(t)
        t = t.view(b, self.n_tokens, -1, self.stride).permute(0, 2, 1, 3)  # (B, C_out, T, s)
        return t.reshape(b, t.shape[1], self.n_tokens * self.stride)[..., : self.length]


class GridEmbedder(nn.Module):
    """``phi`` for grids: (B, C, H, W) -> (B, T, d) with square patches, T = ceil(H/p) * ceil(W/p).

    Conv2d(C, d, kernel=stride=p) patches the grid (zero-padded at the bottom and right edges),
    then LayerNorm and position embeddings initialised from the body's (row-major patch order);
    ``pos_in_norm`` as for :class:`SequenceEmbedder`.
    """

    def __init__(
        self,
        in_channels: int,
        height: int,
        width: int,
        d: int,
        max_tokens: int,
        positions: torch.Tensor,
        pos_in_norm: bool = False,
    ):
        super().__init__()
        self.pos_in_norm = pos_in_norm
        self.in_channels, self.height, self.width = in_channels, height, width
        self.patch = grid_patch_size(height, width, max_tokens)
        self.rows, self.cols = math.ceil(height / self.patch), math.ceil(width / self.patch)
        self.n_tokens = self.rows * self.cols
        self.proj = nn.Conv2d(in_channels, d, kernel_size=self.patch, stride=self.patch)
        self.norm = nn.LayerNorm(d)
        self.pos = nn.Parameter(positions[: self.n_tokens].detach().clone())

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.in_channels, self.height, self.width)

    @property
    def patch_numel(self) -> int:
        return self.patch * self.patch

    def token_mask(self, mask: torch.Tensor | None) -> None:
        del mask
        return None

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        del mask
        p = self.patch
        x = nn.functional.pad(x, (0, self.cols * p - self.width, 0, self.rows * p - self.height))
        u = self.proj(x).flatten(2).transpose(1, 2)  # (B, T, d), row-major patches
        return self.norm(u + self.pos) if self.pos_in_norm else self.norm(u) + self.pos

    def fold(self, t: torch.Tensor) -> torch.Tensor:
        """(B, T, C_out * p * p) per-token outputs -> (B, C_out, H, W)."""
        b, p = len(t), self.patch
        t = t.view(b, self.rows, self.cols, -1, p, p).permute(0, 3, 1, 4, 2, 5)  # (B, C, rows, p, cols, p)
        t = t.reshape(b, t.shape[1], self.rows * p, self.cols * p)
        return t[..., : self.height, : self.width]


EMBEDDER_INITS = ("body", "fresh")


def build_embedder(cfg: EmbedderSpec, body: Body | None = None) -> SequenceEmbedder | GridEmbedder:
    """The embedder an embedder config describes (``input_shape`` of length 2: sequence; 3: grid).

    ``cfg.init``: ``"body"`` puts the positions inside the LayerNorm and, given ``body``, copies
    the body's embedding LayerNorm and positions (:func:`init_from_body`); ``"fresh"`` (and configs
    saved before the key existed) keeps a fresh LayerNorm with the body's positions added after it.
    Without ``body`` the weights are placeholders, to be overwritten by a checkpoint.
    """
    shape, init = cfg.input_shape, cfg.init
    if init not in EMBEDDER_INITS:
        raise ValueError(f"unknown embedder init {init!r}; choices: {', '.join(EMBEDDER_INITS)}")
    inside = init == "body"
    positions = torch.zeros(cfg.max_tokens, cfg.d) if body is None else body.position_embeddings
    if len(shape) == 3:
        emb = GridEmbedder(shape[0], shape[1], shape[2], cfg.d, cfg.max_tokens, positions, pos_in_norm=inside)
    else:
        emb = SequenceEmbedder(
            shape[0],
            shape[1],
            cfg.d,
            cfg.max_tokens,
            positions,
            cfg.overlap,
            motif_kernel=cfg.motif_kernel,
            pos_in_norm=inside,
            derivatives=cfg.derivatives,
            difference_scales=None if cfg.difference_scales is None else list(cfg.difference_scales),
        )
    if inside and body is not None:
        init_from_body(emb, body)
    return emb


@torch.no_grad()
def init_from_body(embedder: SequenceEmbedder | GridEmbedder, body: Body) -> None:
    """Copy the body's input LayerNorm (gamma, beta) and its positions (with the token-type-0
    embedding folded in) into ``embedder``, as ORCA's and RECRAFT's released codes do.

    Target tokens then start on the scale of the body's own input embeddings (norm ~3 for
    MiniLM) instead of ~sqrt(d) from a fresh LayerNorm, and stage 1 does not spend itself
    closing that gap.
    """
    norm, positions = body.input_norm, body.input_positions
    embedder.norm.load_state_dict(norm.state_dict())
    embedder.pos.copy_(positions[: embedder.n_tokens])


def head_outputs(task_type: str, target_shape: list[int], n_classes: int) -> int:
    """Width of the head's output: classes, labels, regression targets, or channels of a field."""
    if task_type in ("binary", "multiclass"):
        return n_classes
    if task_type == "field":
        return target_shape[0]
    return math.prod(target_shape) if target_shape else 1


class LinearSkip(nn.Module):
    """A fixed linear map from the flattened input to the flattened output, added to the head's.

    Holds :class:`components.reference.LinearMap` as buffers (not trained; saved with the model):
    ``y = y_mean + ((x - x_mean) @ basis) @ coef``. Its rank is known only once the map is fitted,
    so a placeholder of rank 0 takes the shapes of the state dict it loads.
    """

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.register_buffer("x_mean", torch.zeros(d_in))
        self.register_buffer("basis", torch.zeros(d_in, 0))
        self.register_buffer("coef", torch.zeros(0, d_out))
        self.register_buffer("y_mean", torch.zeros(d_out))

    @torch.no_grad()
    def set_map(self, linear_map) -> None:
        """Load a fitted :class:`components.reference.LinearMap` (float32)."""
        for name in ("x_mean", "basis", "coef", "y_mean"):
            setattr(self, name, torch.as_tensor(getattr(linear_map, name), dtype=torch.float32).contiguous())

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("basis", "coef"):  # adopt the saved rank
            if (key := prefix + name) in state_dict:
                mine = getattr(self, name)  # on this module's device (a checkpoint loads on the CPU)
                setattr(self, name, torch.empty(state_dict[key].shape, dtype=mine.dtype, device=mine.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # float32 even under bf16 autocast: the map is often most of the prediction.
        with torch.autocast(device_type=x.device.type, enabled=False):
            flat = x.flatten(1).float() - self.x_mean
            return (flat @ self.basis) @ self.coef + self.y_mean


class CrossModalModel(nn.Module):
    """``h_t(g(phi(x)))`` with a head for the task type.

    - ``binary`` / ``multiclass`` / ``multilabel``: ``Linear(d, n_out)`` on the masked mean of
      the body's tokens; outputs logits (B, n_out).
    - ``regression``: the same pooled head; outputs (B, D) in the targets' units (the head
      predicts standardised targets, rescaled by ``target_mean``/``target_std`` buffers).
    - ``field``: ``Linear(d, C_out * patch)`` on every token, folded back onto the input's grid;
      outputs (B, C_out, *spatial).

    With ``linear_skip`` (fields and regression), a fixed :class:`LinearSkip` of the raw input is
    added to the output and the head starts at zero: the model starts as the linear map it is
    given (:meth:`LinearSkip.set_map`, the ridge fit of the fit stage) and the body learns what a
    linear map cannot.
    """

    def __init__(
        self,
        embedder: SequenceEmbedder | GridEmbedder,
        body: Body,
        n_out: int,
        task_type: str = "multiclass",
        target_shape: tuple[int, ...] = (),
        linear_skip: bool = False,
    ) -> None:
        super().__init__()
        if linear_skip and task_type not in ("field", "regression"):
            raise ValueError(f"a linear skip needs real-valued targets; task type {task_type!r} has none")
        self.embedder = embedder
        self.body = body
        self.task_type = task_type
        self.target_shape = tuple(target_shape)
        self.masked = False  # trained on padded sequences (set by whoever loads it; for serving)
        width = n_out * embedder.patch_numel if task_type == "field" else n_out
        self.head = nn.Linear(body.hidden_size, width)
        self.register_buffer("target_mean", torch.zeros(n_out))
        self.register_buffer("target_std", torch.ones(n_out))
        self.skip = None
        if linear_skip:
            self.skip = LinearSkip(math.prod(embedder.input_shape), math.prod(self.target_shape) or 1)
            nn.init.zeros_(self.head.weight)  # the model starts as the linear map
            nn.init.zeros_(self.head.bias)

    def tokens(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Body outputs (B, T, d) and the token mask (B, T) or ``None``."""
        tmask = self.embedder.token_mask(mask)
        return self.body(self.embedder(x, mask), tmask), tmask

    def features(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, d) masked mean of the body's output tokens."""
        h, tmask = self.tokens(x, mask)
        return masked_mean(h, tmask)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h, tmask = self.tokens(x, mask)
        if self.task_type == "field":
            out = self.embedder.fold(self.head(h))
        else:
            out = self.head(masked_mean(h, tmask))
            if self.task_type != "regression":
                return out
            out = out * self.target_std  # standardised -> target units
            if self.skip is None:  # the skip's map carries the mean
                out = out + self.target_mean
            out = out.view(len(out), *self.target_shape)
        if self.skip is not None:
            xs = x if mask is None else x * mask.unsqueeze(1).to(x.dtype)
            out = out.float() + self.skip(xs).view(out.shape)  # the sum in float32 under autocast too
        return out
