"""Every registered task, and a user's .npz and PDEBench file, end to end on a tiny subset.

The source stage (which does not depend on the task) runs once; each task then runs assets,
prepare, align, fit and evaluate through the same flows as ``dvc repro``. The prepared splits are
checked too: shapes, dtypes, finite values, and no sample shared between train, val and test.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil

import numpy as np
import pytest
import torch

from components.tasks import TASKS
from tests.conftest import TINY

pytestmark = pytest.mark.slow

# TINY on every task: fewer samples, and the generated fields small.
BUDGET = TINY + [
    "prepare.max_train=96",
    "prepare.max_test=48",
    "data.n_samples=200",
    "data.resolution=32",
    "source.n_source=100",
    "source.epochs=2",
    "align.epochs=2",
    "align.steps_per_epoch=1",
    "fit.batch_size=32",
]


def _raw(x: np.ndarray, normalisation: dict, mask: np.ndarray | None) -> np.ndarray:
    """Prepared inputs back in their raw units (padded steps zero, as a user would pad)."""
    if not normalisation["applied"]:
        return x
    shape = (1, -1) + (1,) * (x.ndim - 2)
    raw = x * np.asarray(normalisation["std"], np.float32).reshape(shape)
    raw = raw + np.asarray(normalisation["mean"], np.float32).reshape(shape)
    return raw if mask is None else raw * mask[:, None, :]


def _context(root, wheel_cache, overrides):
    from flows.params import parse_params, task_values, with_overrides
    from flows.pipeline import make_context
    from flows.settings import load_settings

    settings = load_settings(
        tracking_uri=f"sqlite:///{root.parent / 'mlflow.db'}",
        artifact_location=(root.parent / "artifacts").as_uri(),
        wheel_cache=wheel_cache,
        device="cpu",
    )
    # As a params file is read: the task's per_task values (tecator's differences) apply under TINY.
    return make_context(parse_params(task_values(with_overrides({}, BUDGET + overrides))), settings, root)


@pytest.fixture(scope="module")
def source_stage(prefect_harness, wheel_cache, tmp_path_factory):
    from flows.pipeline import run_stage

    ctx = _context(tmp_path_factory.mktemp("tasks") / "base", wheel_cache, [])
    for stage in ("assets", "source"):
        run_stage(stage, ctx)
    return ctx.layout.source_dir


@pytest.fixture(scope="module")
def user_files(tmp_path_factory):
    from components.pde import generate_advection
    from components.pdebench import write_pdebench_1d

    root = tmp_path_factory.mktemp("user")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 3, 24)).astype(np.float32)
    y = (x[:, :2].mean(axis=2) > 0).astype(np.int64)  # two labels: a multi-label task
    np.savez(root / "mine.npz", x_train=x[:90], y_train=y[:90], x_test=x[90:], y_test=y[90:])
    r = (x[:, 0].mean(axis=1) - x[:, 2, :5].mean(axis=1)).astype(np.float32)  # scalar regression
    np.savez(root / "scalar.npz", x_train=x[:90], y_train=r[:90], x_test=x[90:], y_test=r[90:])
    u0, u1 = generate_advection(60, 32, seed=1, t_final=0.5)
    tensor = np.concatenate([u0, u1], axis=1)  # (N, T=2, X): PDEBench's 1D layout
    write_pdebench_1d(root / "advection.hdf5", tensor)
    return {"npz": root / "mine.npz", "npz-regression": root / "scalar.npz", "pdebench": root / "advection.hdf5"}


def _hashes(x):
    return {hashlib.sha1(np.ascontiguousarray(row).tobytes()).hexdigest() for row in x}


@pytest.mark.parametrize("task", [*sorted(TASKS), "npz", "npz-regression", "pdebench"])
def test_task_runs_end_to_end(task, source_stage, user_files, wheel_cache, tmp_path):
    from components.data import load_split
    from flows.pipeline import run_stage

    name = f"{task.split('-')[0]}:{user_files[task]}" if task in user_files else task
    ctx = _context(tmp_path / "ws", wheel_cache, [f"task={name}"])
    shutil.copytree(source_stage, ctx.layout.source_dir)
    for stage in ("assets", "prepare", "align", "fit", "evaluate"):
        run_stage(stage, ctx)

    meta = json.loads((ctx.layout.prepared_dir / "meta.json").read_text())
    result = json.loads(ctx.layout.metrics("evaluate").read_text())
    expected_type = {"npz": "multilabel", "npz-regression": "regression", "pdebench": "field"}.get(task)
    expected_type = expected_type or TASKS[task].task_type
    assert meta["task_type"] == expected_type
    assert result["metric"] == meta["metric"] and math.isfinite(result[f"test/{meta['metric']}"])
    assert math.isfinite(result["bound/value"])
    if task == "tecator":  # its per_task entry: phi reads the spectrum's differences, no linear skip
        config = json.loads((ctx.layout.model_dir / "config.json").read_text())
        assert config["embedder"]["derivatives"] == 2 and len(config["embedder"]["difference_scales"]) == 3
    metric = meta["metric"]
    # The saved model (a linear skip included) served on raw inputs, as the registered pyfunc
    # serves it: un-normalised test inputs give back what evaluate scored.
    from components.metrics import compute_metrics
    from components.serving import RawInputModel
    from components.training import predict_scores

    test = load_split(ctx.layout.prepared_dir / "test.npz")
    served = RawInputModel(ctx.layout.model_dir)
    out = served.predict(_raw(test.x, meta["normalisation"], test.mask), test.mask)
    scores = predict_scores(served.model, test.x, torch.device("cpu"), mask=test.mask)
    std = None if meta["target_stats"] is None else np.asarray(meta["target_stats"]["std"])
    if meta["task_type"] in ("field", "regression"):
        assert (served.model.skip is not None) is ctx.params.model.linear_skip  # off in tecator's entry
        again = compute_metrics(meta["task_type"], out["predictions"], test.y, std)[metric]
        assert again == pytest.approx(result[f"test/{metric}"], rel=1e-4)
        # The linear references sit beside ours; a model that starts at the ridge map (a linear
        # skip) beats the mean prediction even after this one-epoch run.
        assert math.isfinite(result[f"reference/ridge/{metric}"])
        if ctx.params.model.linear_skip:
            assert result[f"test/{metric}"] < result[f"reference/mean/{metric}"], result
    else:
        assert not any(k.startswith("reference/") for k in result)
        if meta["task_type"] == "multilabel":
            np.testing.assert_array_equal(out["predictions"], (scores > 0).astype(np.int64))
        else:
            np.testing.assert_array_equal(out["predictions"], scores.argmax(1))
            assert list(out["labels"]) == [meta["class_names"][i] for i in out["predictions"]]
            np.testing.assert_allclose(out["scores"].sum(1), 1.0, rtol=1e-5)

    splits = {n: load_split(ctx.layout.prepared_dir / f"{n}.npz") for n in ("train", "val", "test")}
    for split in splits.values():
        assert split.x.dtype == np.float32 and np.isfinite(split.x).all()
        assert list(split.x.shape[1:]) == meta["input_shape"] and list(split.y.shape[1:]) == meta["target_shape"]
        assert split.groups is not None and split.groups.dtype == np.int64
    hashes = {n: _hashes(s.x) for n, s in splits.items()}
    assert not hashes["train"] & hashes["test"] and not hashes["val"] & hashes["test"]
    assert not hashes["train"] & hashes["val"]
    print(task, meta["sizes"], "group counts:", meta["group_counts"]["train"])
