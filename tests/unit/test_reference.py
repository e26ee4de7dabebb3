"""The linear references (ridge, mean) and the linear skip that starts a field model at the ridge map."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from components import reference
from components.config import FitParams
from components.data import Split
from components.fit_loop import fit_model
from components.metrics import compute_metrics
from components.model import CrossModalModel, SequenceEmbedder
from components.reference import fit_ridge, references
from components.training import predict_scores

CPU = torch.device("cpu")


def _fields(n: int, seed: int, length: int = 24, nonlinear: float = 0.0, noise: float = 0.0) -> Split:
    """Smooth periodic fields x and y = x shifted by 3 cells (+ nonlinear * x^2, + noise)."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 2 * np.pi, length, endpoint=False)
    k = np.arange(1, 4)[None, :, None]
    x = (rng.normal(size=(n, 3, 1)) * np.sin(k * t + rng.uniform(0, 2 * np.pi, size=(n, 3, 1)))).sum(1)
    y = np.roll(x, 3, axis=-1) + nonlinear * x**2 + noise * rng.normal(size=x.shape)
    return Split(x[:, None].astype(np.float32), y[:, None].astype(np.float32))


def test_ridge_solves_a_linear_shift_and_picks_its_penalty_on_validation():
    train, val, test = _fields(200, 1), _fields(50, 2), _fields(100, 3)
    ridge = fit_ridge(train.x, train.y, val.x, val.y, "field", "nrmse")
    err = compute_metrics("field", ridge.predict(test.x, (1, 24)), test.y)["nrmse"]
    assert err < 1e-4, err
    # With noise, the chosen penalty scores best on validation among all the grid's penalties.
    train, val = _fields(30, 4, noise=0.5), _fields(40, 5, noise=0.5)
    chosen = fit_ridge(train.x, train.y, val.x, val.y, "field", "nrmse")
    xf = train.x.reshape(30, -1).astype(np.float64)
    scores = []
    for a in reference.ALPHAS:
        xc = xf - xf.mean(0)
        alpha = a * float((np.linalg.svd(xc, compute_uv=False) ** 2).mean())
        yc = train.y.reshape(30, -1) - train.y.mean(0).ravel()
        w = np.linalg.solve(xc.T @ xc + alpha * np.eye(xc.shape[1]), xc.T @ yc)
        pred = (val.x.reshape(40, -1) - xf.mean(0)) @ w + train.y.reshape(30, -1).mean(0)
        scores.append(compute_metrics("field", pred.reshape(val.y.shape), val.y)["nrmse"])
    got = compute_metrics("field", chosen.predict(val.x, (1, 24)), val.y)["nrmse"]
    assert got == pytest.approx(min(scores), rel=1e-6)
    assert chosen.alpha > 0


def test_references_score_the_mean_and_the_ridge_on_test_and_skip_classification():
    train, val, test = _fields(200, 1, nonlinear=0.3), _fields(50, 2, nonlinear=0.3), _fields(100, 3, nonlinear=0.3)
    refs = references("field", "nrmse", train, val, test)
    mean = np.broadcast_to(train.y.mean(0), test.y.shape)
    assert refs["reference/mean/nrmse"] == pytest.approx(compute_metrics("field", mean, test.y)["nrmse"])
    assert refs["reference/ridge/nrmse"] < 0.5 * refs["reference/mean/nrmse"]
    assert {k.split("/")[-1] for k in refs} == {"nrmse", "rel_l2", "rmse", "loss"}
    labels = Split(train.x, np.zeros(len(train), np.int64))
    assert references("binary", "accuracy", labels, labels, labels) == {}


def test_the_stored_map_is_capped_in_rank(monkeypatch):
    monkeypatch.setattr(reference, "MAX_RANK", 5)
    train, val = _fields(200, 1), _fields(50, 2)
    ridge = fit_ridge(train.x, train.y, val.x, val.y, "field", "nrmse")
    assert ridge.basis.shape == (24, 5) and ridge.coef.shape == (5, 24)
    # Fields of 3 sine modes span 6 directions: rank 5 loses some, but keeps most of the map.
    err = compute_metrics("field", ridge.predict(val.x, (1, 24)), val.y)["nrmse"]
    assert 1e-4 < err < 0.7, err


def _model(body, task_type="field", target_shape=(1, 24), skip=True):
    torch.manual_seed(0)
    emb = SequenceEmbedder(1, 24, body.hidden_size, 8, body.position_embeddings, overlap=2)
    n_out = 1 if task_type == "field" else int(np.prod(target_shape) or 1)
    return CrossModalModel(emb, body, n_out, task_type, target_shape, linear_skip=skip)


def test_a_model_with_a_linear_skip_starts_as_the_map_and_reloads_its_rank(tiny_body):
    train, val = _fields(200, 1, nonlinear=0.3), _fields(50, 2, nonlinear=0.3)
    ridge = fit_ridge(train.x, train.y, val.x, val.y, "field", "nrmse")
    model = _model(tiny_body)
    model.skip.set_map(ridge)
    out = predict_scores(model, val.x, CPU)
    np.testing.assert_allclose(out, ridge.predict(val.x, (1, 24)), atol=1e-5)
    # bf16 autocast leaves the map in float32 (it is most of the prediction).
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        low = model.eval()(torch.from_numpy(val.x)).float().numpy()
    np.testing.assert_allclose(low - out, (low - out).mean(), atol=1e-5)  # only the (zero) head differs
    fresh = _model(tiny_body)  # a placeholder of rank 0 adopts the saved rank
    fresh.load_state_dict(model.state_dict())
    np.testing.assert_array_equal(predict_scores(fresh, val.x, CPU), out)
    # Regression: the map carries the targets' mean (not added twice).
    scalar = Split(train.x, train.y[:, 0, :3].copy())
    reg = _model(tiny_body, "regression", (3,))
    reg.target_mean.fill_(5.0)
    reg.skip.set_map(fit_ridge(scalar.x, scalar.y, scalar.x, scalar.y, "regression", "rmse"))
    np.testing.assert_allclose(predict_scores(reg, scalar.x, CPU).mean(0), scalar.y.mean(0), atol=1e-4)
    with pytest.raises(ValueError, match="real-valued"):
        _model(tiny_body, "binary", (), skip=True)


def test_the_body_learns_what_the_ridge_map_cannot(tiny_body):
    """y = shift(x) + 0.5 x^2: ridge gets the shift, the body must add the square."""
    train, val, test = (_fields(n, s, nonlinear=0.5) for n, s in ((480, 1), (160, 2), (300, 3)))
    ridge = fit_ridge(train.x, train.y, val.x, val.y, "field", "nrmse")
    model = _model(tiny_body)
    model.skip.set_map(ridge)
    cfg = FitParams(epochs=8, min_steps=0, batch_size=32, lr=1e-3, head_lr=3e-3, patience=8)
    model, _ = fit_model(model, train, val, cfg, "nrmse", seed=0, device=CPU)
    ours = compute_metrics("field", predict_scores(model, test.x, CPU), test.y)["nrmse"]
    linear = compute_metrics("field", ridge.predict(test.x, (1, 24)), test.y)["nrmse"]
    assert ours < 0.8 * linear, (ours, linear)


def test_a_skip_loaded_after_the_move_to_a_device_stays_on_that_device(tiny_body):
    """fit_model moves the model before a resumed checkpoint (CPU tensors) loads into it."""
    train, val = _fields(100, 1), _fields(30, 2)
    model = _model(tiny_body)
    model.skip.set_map(fit_ridge(train.x, train.y, val.x, val.y, "field", "nrmse"))
    placeholder = _model(tiny_body).skip.to("meta")  # stands in for a CUDA module on this machine
    placeholder.load_state_dict(model.skip.state_dict(), assign=False)
    assert {b.device.type for b in placeholder.buffers()} == {"meta"}
    assert placeholder.basis.shape == model.skip.basis.shape


def test_a_large_input_uses_the_top_singular_directions(monkeypatch):
    """Above twice the rank cap the SVD is randomised; on a low-rank map it is still exact."""
    monkeypatch.setattr(reference, "MAX_RANK", 8)
    rng = np.random.default_rng(0)
    basis = rng.normal(size=(6, 64))  # inputs of rank 6 in 64 dimensions, 40 cases
    x = (rng.normal(size=(40, 6)) @ basis)[:, None].astype(np.float32)
    w = rng.normal(size=(64, 5))
    y = (x[:, 0] @ w).astype(np.float32)
    exact = reference._top_svd(x[:, 0].astype(np.float64), 40)[1]  # min(40, 64) <= 80: plain SVD
    fast = reference._top_svd(x[:, 0].astype(np.float64), 8)[1]  # min(40, 64) > 16: randomised
    np.testing.assert_allclose(fast[:6], exact[:6], rtol=1e-8)
    ridge = fit_ridge(x, y, x, y, "regression", "rmse")
    assert compute_metrics("regression", ridge.predict(x, (5,)), y)["rmse"] < 1e-3 * y.std()
