"""Behaviour: alignment lowers its objective, and fitting beats chance on held-out data."""

import numpy as np
import pytest
import torch
from torch import nn

from components.align_loop import AlignReference, align_embedder, alignment_terms
from components.config import AlignParams, FitParams
from components.data import Split
from components.fit_loop import fit_model
from components.metrics import compute_metrics
from components.model import CrossModalModel, SequenceEmbedder
from components.training import predict_scores


def _motif_task(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One-hot-like (n, 4, 40) noise; class 1 carries the motif ACGTAC at a random position."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, 4, size=(n, 40))
    y = rng.integers(0, 2, size=n)
    motif = np.array([0, 1, 2, 3, 0, 1])
    for i in np.flatnonzero(y):
        start = rng.integers(0, 40 - len(motif))
        idx[i, start : start + len(motif)] = motif
    x = np.zeros((n, 4, 40), dtype=np.float32)
    x[np.arange(n)[:, None], idx, np.arange(40)[None, :]] = 1.0
    return x, y.astype(np.int64)


def _embedder(body, seed: int = 0, motif_kernel: int | None = None) -> SequenceEmbedder:
    torch.manual_seed(seed)
    return SequenceEmbedder(4, 40, body.hidden_size, 8, body.position_embeddings, overlap=2, motif_kernel=motif_kernel)


def test_alignment_lowers_fa_and_fld(tiny_body):
    g = torch.Generator().manual_seed(0)
    head = nn.Linear(32, 4)
    nn.init.normal_(head.weight, std=1.0, generator=g)
    cloud = torch.randn(200, 32, generator=g) * 0.3 + torch.randn(32, generator=g)
    ref = AlignReference(cloud, head)
    x, y = _motif_task(256, seed=1)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    embedder = _embedder(tiny_body)
    cfg = AlignParams(epochs=6, steps_per_epoch=8, batch_size=64, eps=1.0, lr=1e-2, fld_variant="ce")
    with torch.no_grad():
        before = alignment_terms(embedder, tiny_body, ref, xt, yt, cfg)
    history = align_embedder(embedder, tiny_body, ref, xt, yt, cfg, seed=0, device=torch.device("cpu"))
    with torch.no_grad():
        after = alignment_terms(embedder, tiny_body, ref, xt, yt, cfg)
    # Both terms of the joint objective fall (fixed normalisers: neither drowns the other).
    assert after["fa"] < 0.7 * before["fa"], (before, after)
    assert after["fld"] < 0.5 * before["fld"], (before, after)
    assert history[-1]["fa"] < 0.7 * history[0]["first_fa"]
    assert history[-1]["fld"] < 0.5 * history[0]["first_fld"]


def test_first_step_gradient_norms_let_a_minimised_fld_stop_pulling(tiny_body_factory):
    """With ``balance: first`` each term's gradient is divided by its first-step norm: once FLD is
    near 0 its pull fades and FA falls further than with per-step unit directions, which keep
    moving ``phi`` along FLD's (vanishing) gradient at full strength."""
    g = torch.Generator().manual_seed(0)
    head = nn.Linear(32, 4)
    nn.init.normal_(head.weight, std=1.0, generator=g)
    ref = AlignReference(torch.randn(200, 32, generator=g) * 0.3 + torch.randn(32, generator=g), head)
    x, y = _motif_task(256, seed=1)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    after = {}
    for balance in ("unit", "first"):
        body = tiny_body_factory()
        embedder = _embedder(body)
        cfg = AlignParams(epochs=6, steps_per_epoch=8, batch_size=64, eps=1.0, lr=1e-2, balance=balance)
        align_embedder(embedder, body, ref, xt, yt, cfg, seed=0, device=torch.device("cpu"))
        with torch.no_grad():
            after[balance] = alignment_terms(embedder, body, ref, xt, yt, cfg)
    assert after["first"]["fa"] < 0.6 * after["unit"]["fa"], after
    assert after["first"]["fld"] < 0.2, after  # FLD (ce, from 1.09) stays near its minimum


def test_a_running_magnitude_normaliser_is_not_used(tiny_body):
    """Near FLD = 0 (the mi variant with a head that cannot tell classes apart) the joint step
    must not blow FLD's weight up: with lambda_fld tiny, FA falls as much as FA alone does."""
    g = torch.Generator().manual_seed(0)
    head = nn.Linear(32, 4)
    ref = AlignReference(torch.randn(200, 32, generator=g) + 1.0, head)
    x, y = _motif_task(128, seed=2)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    falls = {}
    for name, lam in (("joint", 1e-6), ("fa_only", 0.0)):
        cfg = AlignParams(
            epochs=3, steps_per_epoch=4, batch_size=64, eps=1.0, lr=1e-2, fld_variant="mi", lambda_fld=lam
        )
        history = align_embedder(_embedder(tiny_body), tiny_body, ref, xt, yt, cfg, seed=0, device=torch.device("cpu"))
        falls[name] = history[-1]["fa"] / history[0]["first_fa"]
    assert falls["joint"] == pytest.approx(falls["fa_only"], rel=0.05), falls


def test_orca_and_fa_objectives_lower_their_own_term_only(tiny_body):
    g = torch.Generator().manual_seed(0)
    head = nn.Linear(32, 4)
    labels = torch.arange(200) % 4
    cloud = torch.randn(4, 32, generator=g)[labels] + 0.3 * torch.randn(200, 32, generator=g)
    ref = AlignReference(cloud, head, labels)
    x, y = _motif_task(256, seed=1)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    cfg = AlignParams(epochs=4, steps_per_epoch=6, batch_size=64, eps=1.0, lr=1e-2)
    for objective in ("otdd", "fa"):
        embedder = _embedder(tiny_body)
        with torch.no_grad():
            before = alignment_terms(embedder, tiny_body, ref, xt, yt, cfg, need=(objective,))[objective]
        history = align_embedder(
            embedder, tiny_body, ref, xt, yt, cfg, seed=0, device=torch.device("cpu"), objective=objective
        )
        assert [{k for k in h if k != "loss" and not k.startswith("first_")} for h in history] == [{objective}] * 4
        with torch.no_grad():
            after = alignment_terms(embedder, tiny_body, ref, xt, yt, cfg, need=(objective,))[objective]
        assert after < 0.7 * before, (objective, before, after)


def test_sequential_schedule_moves_each_term_in_its_phase(tiny_body):
    g = torch.Generator().manual_seed(0)
    head = nn.Linear(32, 4)
    nn.init.normal_(head.weight, std=1.0, generator=g)
    ref = AlignReference(torch.randn(200, 32, generator=g) + 1.0, head)
    x, y = _motif_task(128, seed=2)
    cfg = AlignParams(
        schedule="sequential", epochs=4, steps_per_epoch=4, batch_size=64, eps=1.0, lr=5e-3, fld_variant="ce"
    )
    history = align_embedder(
        _embedder(tiny_body),
        tiny_body,
        ref,
        torch.from_numpy(x),
        torch.from_numpy(y),
        cfg,
        seed=0,
        device=torch.device("cpu"),
    )
    assert [{k for k in h if k in ("fa", "fld")} for h in history] == [{"fa"}, {"fa"}, {"fld"}, {"fld"}]
    assert history[1]["fa"] < history[0]["fa"]
    assert history[3]["fld"] < history[2]["fld"]


def test_fit_beats_chance_on_held_out_data(tiny_body):
    x, y = _motif_task(600, seed=3)
    xv, yv = _motif_task(200, seed=4)
    model = CrossModalModel(_embedder(tiny_body, motif_kernel=7), tiny_body, 2, "binary")
    cfg = FitParams(epochs=6, min_steps=0, batch_size=32, lr=1e-3, head_lr=3e-3, patience=6)
    model, history = fit_model(model, Split(x, y), Split(xv, yv), cfg, "accuracy", seed=0, device=torch.device("cpu"))
    xt, yt = _motif_task(300, seed=5)
    acc = compute_metrics("binary", predict_scores(model, xt, torch.device("cpu")), yt)["accuracy"]
    # Chance is 0.5; 300 test samples put 0.6 more than 3 standard errors above it.
    assert acc > 0.6, (acc, history)
    # Model selection: the returned weights are those of the best validation epoch.
    val_acc = compute_metrics("binary", predict_scores(model, xv, torch.device("cpu")), yv)["accuracy"]
    assert val_acc == max(h["val_accuracy"] for h in history)
