"""Behaviour: stage 2 learns every task type (regression, multi-label, dense fields, padded
sequences) well beyond a target-free baseline on held-out data."""

from __future__ import annotations

import numpy as np
import torch

from components.config import FitParams
from components.data import Split
from components.fit_loop import fit_model
from components.metrics import compute_metrics
from components.model import CrossModalModel, GridEmbedder, SequenceEmbedder
from components.training import predict_scores

CPU = torch.device("cpu")
CFG = FitParams(epochs=8, min_steps=0, batch_size=32, lr=1e-3, head_lr=3e-3, patience=8)


def _model(body, task_type, n_out, target_shape=(), length=24, channels=2):
    torch.manual_seed(0)
    emb = SequenceEmbedder(channels, length, body.hidden_size, 8, body.position_embeddings, overlap=2)
    return CrossModalModel(emb, body, n_out, task_type, target_shape)


def _fit(model, make, metric):
    train, val, test = make(480, 1), make(160, 2), make(300, 3)
    model, _ = fit_model(model, train, val, CFG, metric, seed=0, device=CPU)
    return predict_scores(model, test.x, CPU, mask=test.mask), test


def test_scalar_regression_beats_the_mean(tiny_body):
    def make(n, seed):
        x = np.random.default_rng(seed).normal(size=(n, 2, 24)).astype(np.float32)
        return Split(x, (3.0 * x[:, 0].mean(1) + 1.0).astype(np.float32))

    model = _model(tiny_body, "regression", 1)
    y_train = make(480, 1).y
    model.target_mean.fill_(float(y_train.mean()))
    model.target_std.fill_(float(y_train.std()))
    pred, test = _fit(model, make, "rmse")
    rmse = compute_metrics("regression", pred, test.y)["rmse"]
    assert rmse < 0.7 * test.y.std(), (rmse, test.y.std())  # the mean predictor scores std(y)


def test_multilabel_beats_chance(tiny_body):
    def make(n, seed):
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(n, 2, 24)).astype(np.float32) * 0.5
        y = rng.integers(0, 2, size=(n, 2))
        x[:, 0, :8] += 2.0 * y[:, :1]  # label 0: a bump early in channel 0
        x[:, 1, 16:] += 2.0 * y[:, 1:]  # label 1: a bump late in channel 1
        return Split(x, y.astype(np.int64))

    pred, test = _fit(_model(tiny_body, "multilabel", 2, (2,)), make, "f1")
    m = compute_metrics("multilabel", pred, test.y)
    assert m["auroc"] > 0.8 and m["f1"] > 0.7, m


def test_dense_field_beats_the_mean_field(tiny_body):
    def make(n, seed):
        rng = np.random.default_rng(seed)
        t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        a, phase = rng.uniform(0.5, 1.5, size=(n, 1)), rng.uniform(0, 2 * np.pi, size=(n, 1))
        x = (a * np.sin(t + phase))[:, None].astype(np.float32)
        y = (a * np.sin(t + phase + 1.0) + 2.0)[:, None].astype(np.float32)  # shifted and offset
        return Split(np.repeat(x, 2, axis=1), y)

    pred, test = _fit(_model(tiny_body, "field", 1, (1, 24)), make, "nrmse")
    baseline = np.broadcast_to(make(480, 1).y.mean(0), test.y.shape)
    ours, mean_field = (
        compute_metrics("field", pred, test.y)["nrmse"],
        compute_metrics("field", baseline, test.y)["nrmse"],
    )
    assert ours < 0.6 * mean_field, (ours, mean_field)


def test_grid_field_learns(tiny_body):
    def make(n, seed):
        x = np.random.default_rng(seed).normal(size=(n, 1, 8, 8)).astype(np.float32)
        return Split(x, (2.0 * x + 1.0).astype(np.float32))

    torch.manual_seed(0)
    emb = GridEmbedder(1, 8, 8, tiny_body.hidden_size, 16, tiny_body.position_embeddings)
    pred, test = _fit(CrossModalModel(emb, tiny_body, 1, "field", (1, 8, 8)), make, "rel_l2")
    baseline = np.broadcast_to(make(480, 1).y.mean(0), test.y.shape)
    assert compute_metrics("field", pred, test.y)["rel_l2"] < 0.6 * compute_metrics("field", baseline, test.y)["rel_l2"]


def test_padded_sequences_of_unequal_length_are_classified(tiny_body):
    def make(n, seed):
        rng = np.random.default_rng(seed)
        lengths = rng.integers(6, 25, size=n)
        y = rng.integers(0, 3, size=n)
        x = np.zeros((n, 2, 24), np.float32)
        mask = np.arange(24)[None] < lengths[:, None]
        for i in range(n):
            x[i, 0, : lengths[i]] = y[i] - 1.0 + rng.normal(scale=0.5, size=lengths[i])
            x[i, 1, : lengths[i]] = rng.normal(size=lengths[i])
        return Split(x, y.astype(np.int64), mask=mask)

    pred, test = _fit(_model(tiny_body, "multiclass", 3), make, "accuracy")
    assert compute_metrics("multiclass", pred, test.y)["accuracy"] > 0.6  # chance: 1/3
