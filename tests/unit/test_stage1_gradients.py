"""Stage 1 trains phi only; per-sample gradient norms are really per sample."""

import torch
from torch import nn

from components.align_loop import AlignReference, align_embedder
from components.config import AlignParams
from components.model import SequenceEmbedder
from components.source import per_sample_grad_norms


def test_only_embedder_receives_gradients(tiny_body):
    g = torch.Generator().manual_seed(0)
    embedder = SequenceEmbedder(4, 40, 32, 10, tiny_body.position_embeddings, overlap=2)
    head = nn.Linear(32, 5)
    ref = AlignReference(torch.randn(50, 32, generator=g), head)
    body_before = {k: v.clone() for k, v in tiny_body.state_dict().items()}
    head_before = {k: v.clone() for k, v in head.state_dict().items()}
    emb_before = {k: v.clone() for k, v in embedder.state_dict().items()}
    x = torch.randn(32, 4, 40, generator=g)
    y = torch.randint(0, 2, (32,), generator=g)
    cfg = AlignParams(epochs=1, steps_per_epoch=2, batch_size=16, eps=1.0)
    align_embedder(embedder, tiny_body, ref, x, y, cfg, seed=0, device=torch.device("cpu"))
    assert all(torch.equal(v, tiny_body.state_dict()[k]) for k, v in body_before.items())
    assert all(torch.equal(v, head.state_dict()[k]) for k, v in head_before.items())
    assert any(not torch.equal(v, embedder.state_dict()[k]) for k, v in emb_before.items())
    assert all(p.grad is None for p in tiny_body.parameters())
    assert all(p.grad is None for p in head.parameters())


def test_per_sample_grad_norms_match_one_sample_at_a_time(tiny_body):
    g = torch.Generator().manual_seed(1)
    head = nn.Linear(32, 3)
    u = torch.randn(4, 6, 32, generator=g)
    mask = torch.ones(4, 6, dtype=torch.long)
    mask[1, 4:] = 0
    labels = torch.tensor([0, 1, 2, 1])
    _, norms = per_sample_grad_norms(tiny_body, head, u, mask, labels)
    for i in range(4):
        _, single = per_sample_grad_norms(tiny_body, head, u[i : i + 1], mask[i : i + 1], labels[i : i + 1])
        assert torch.allclose(norms[i], single[0], rtol=1e-4, atol=1e-6)
