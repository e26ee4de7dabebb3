"""Heads, embedders and masks for every task type: shapes, folding, and padding that never leaks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from components.align_loop import AlignReference, alignment_terms
from components.config import AlignParams
from components.losses import relative_l2, task_loss
from components.metrics import compute_metrics, metrics_for
from components.model import CrossModalModel, GridEmbedder, SequenceEmbedder, grid_patch_size


def _seq(body, length=30, channels=3, max_tokens=8):
    torch.manual_seed(0)
    return SequenceEmbedder(channels, length, body.hidden_size, max_tokens, body.position_embeddings, overlap=2)


@pytest.mark.parametrize(
    ("task_type", "n_out", "target_shape", "expected"),
    [
        ("binary", 2, (), (5, 2)),
        ("multiclass", 7, (), (5, 7)),
        ("multilabel", 4, (4,), (5, 4)),
        ("regression", 1, (), (5,)),
        ("regression", 3, (3,), (5, 3)),
        ("field", 2, (2, 30), (5, 2, 30)),
    ],
)
def test_sequence_heads_have_the_target_shape(tiny_body, task_type, n_out, target_shape, expected):
    model = CrossModalModel(_seq(tiny_body), tiny_body, n_out, task_type, target_shape)
    assert model(torch.randn(5, 3, 30)).shape == expected


def test_grid_patches_fit_the_token_budget_and_fold_back(tiny_body):
    assert grid_patch_size(16, 16, 64) == 2 and grid_patch_size(16, 16, 10) == 6 and grid_patch_size(5, 7, 100) == 1
    emb = GridEmbedder(1, 15, 13, tiny_body.hidden_size, 16, tiny_body.position_embeddings)
    assert emb(torch.randn(2, 1, 15, 13)).shape == (2, emb.n_tokens, tiny_body.hidden_size)
    assert emb.n_tokens <= 16
    # fold is the exact inverse of cutting a grid into row-major patches
    p, rows, cols = emb.patch, emb.rows, emb.cols
    grid = torch.arange(2 * 3 * rows * p * cols * p, dtype=torch.float32).view(2, 3, rows * p, cols * p)
    tokens = grid.view(2, 3, rows, p, cols, p).permute(0, 2, 4, 1, 3, 5).reshape(2, rows * cols, 3 * p * p)
    assert torch.equal(emb.fold(tokens), grid[..., :15, :13])
    model = CrossModalModel(emb, tiny_body, 1, "field", (1, 15, 13))
    assert model(torch.randn(2, 1, 15, 13)).shape == (2, 1, 15, 13)


def test_sequence_fold_is_the_inverse_of_patching(tiny_body):
    emb = _seq(tiny_body, length=30, max_tokens=8)  # stride 4, 8 tokens, 32 positions
    series = torch.arange(2 * 2 * 32, dtype=torch.float32).view(2, 2, 32)
    tokens = series.view(2, 2, 8, 4).permute(0, 2, 1, 3).reshape(2, 8, 8)
    assert torch.equal(emb.fold(tokens), series[..., :30])


def test_padding_never_leaks_into_outputs_or_alignment(tiny_body):
    model = CrossModalModel(_seq(tiny_body), tiny_body, 3, "multiclass").eval()
    x = torch.randn(4, 3, 30)
    mask = torch.ones(4, 30, dtype=torch.bool)
    mask[0, 12:] = False
    mask[2, 5:] = False
    garbage = x.clone()
    garbage[~mask.unsqueeze(1).expand_as(x)] = 1e3  # what sits in padded steps must not matter
    with torch.no_grad():
        assert torch.allclose(model(x, mask), model(garbage, mask), atol=1e-5)
        # A padded sample equals the same sample padded differently: only tokens with a real
        # step count (sample 2 has 5 real steps: tokens 0-1 of 8).
        assert model.embedder.token_mask(mask)[2].tolist() == [1, 1, 0, 0, 0, 0, 0, 0]
        ref = AlignReference(torch.randn(50, tiny_body.hidden_size), torch.nn.Linear(tiny_body.hidden_size, 5))
        cfg = AlignParams(eps=1.0)
        labels = torch.tensor([0, 1, 0, 1])
        a = alignment_terms(model.embedder, tiny_body, ref, x, labels, cfg, mask=mask)
        b = alignment_terms(model.embedder, tiny_body, ref, garbage, labels, cfg, mask=mask)
    assert torch.allclose(a["fa"], b["fa"], atol=1e-5) and torch.allclose(a["fld"], b["fld"], atol=1e-5)


def test_regression_head_predicts_in_target_units(tiny_body):
    model = CrossModalModel(_seq(tiny_body), tiny_body, 1, "regression", ())
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.zero_()
        model.target_mean.fill_(5.0)
        model.target_std.fill_(2.0)
    assert torch.allclose(model(torch.randn(3, 3, 30)), torch.full((3,), 5.0))
    loss = task_loss("regression", torch.full((3,), 5.0), torch.full((3,), 7.0), model.target_std)
    assert loss.item() == pytest.approx(1.0)  # one std off, squared


def test_losses_and_metrics_agree_and_match_hand_computations():
    y = np.array([[3.0, 4.0], [1.0, 0.0]], dtype=np.float32)[:, None]  # (2, 1, 2) fields
    pred = np.array([[3.0, 0.0], [1.0, 1.0]], dtype=np.float32)[:, None]
    # sample 0: |e| = 4, |y| = 5; sample 1: |e| = 1, |y| = 1 -> mean 0.9
    m = compute_metrics("field", pred, y)
    assert m["rel_l2"] == pytest.approx(0.9) and m["nrmse"] == pytest.approx(0.9) and m["loss"] == pytest.approx(0.9)
    assert relative_l2(torch.from_numpy(pred), torch.from_numpy(y)).item() == pytest.approx(0.9)
    ml = compute_metrics("multilabel", np.array([[2.0, -1.0], [1.0, 3.0]]), np.array([[1, 0], [0, 1]]))
    assert ml["f1"] == pytest.approx(2 * 2 / (3 + 2))  # tp=2, predicted 3, true 2
    b = compute_metrics("binary", np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 2.0], [0.0, 3.0]]), np.array([1, 0, 0, 1]))
    assert b["f1"] == pytest.approx(2 * 2 / (3 + 2)) and b["accuracy"] == 0.75
    r = compute_metrics("regression", np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 4.0]))
    assert r["rmse"] == pytest.approx(np.sqrt(1 / 3)) and r["mae"] == pytest.approx(1 / 3)
    for task_type in ("binary", "multiclass", "multilabel", "regression", "field"):
        assert "loss" in metrics_for(task_type)
