"""Same params and seed give bit-identical weights and metrics on CPU."""

import torch

from components.align_loop import AlignReference, align_embedder
from components.config import AlignParams, FitParams
from components.data import Split
from components.fit_loop import fit_model
from components.model import CrossModalModel
from tests.model.test_learning import _embedder, _motif_task


def _run_once(body, seed: int) -> tuple[dict, list]:
    g = torch.Generator().manual_seed(0)
    head = torch.nn.Linear(32, 4)
    ref = AlignReference(torch.randn(100, 32, generator=g), head)
    x, y = _motif_task(128, seed=7)
    embedder = _embedder(body, seed=seed, motif_kernel=5)
    cfg = AlignParams(epochs=2, steps_per_epoch=2, batch_size=32, eps=1.0)
    align_history = align_embedder(
        embedder, body, ref, torch.from_numpy(x), torch.from_numpy(y), cfg, seed, torch.device("cpu")
    )
    torch.manual_seed(seed)
    model = CrossModalModel(embedder, body, 2, "binary")
    xv, yv = _motif_task(64, seed=8)
    model, fit_history = fit_model(
        model,
        Split(x, y),
        Split(xv, yv),
        FitParams(epochs=2, min_steps=0, batch_size=32),
        "accuracy",
        seed,
        torch.device("cpu"),
    )
    return {k: v.clone() for k, v in model.state_dict().items()}, align_history + fit_history


def test_two_runs_are_bit_identical(tiny_body_factory):
    def body():
        return tiny_body_factory(n_layers=1)

    w1, h1 = _run_once(body(), seed=3)
    w2, h2 = _run_once(body(), seed=3)
    assert h1 == h2
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    w3, _ = _run_once(body(), seed=4)
    assert any(not torch.equal(w1[k], w3[k]) for k in w1)
