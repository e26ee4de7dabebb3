"""Serving: raw inputs go through exactly the preparation the training data went through."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from components.data import PreparedMeta, RawTask, Split, write_meta
from components.errors import CheckpointError, DataError
from components.serving import SERVING_FILE, prepare_inputs, read_serving, serving_files
from components.tasks import TaskSpec, prepare_splits


def _padded(rng: np.random.Generator, n: int, channels: int = 3, length: int = 12) -> Split:
    """Right-padded sequences of 5..length real steps, far from zero mean and unit scale."""
    lengths = rng.integers(5, length + 1, n)
    mask = np.arange(length)[None, :] < lengths[:, None]
    x = rng.normal(3.0, 2.0, (n, channels, length)).astype(np.float32) * mask[:, None, :]
    return Split(x, rng.integers(0, 2, n).astype(np.int64), mask=mask)


def _prepared(raw: RawTask):
    spec = TaskSpec(loader=lambda root, data: raw, task_type="binary", metric=None, modality="", source="test")
    data = SimpleNamespace(test_fraction=0.2, split_seed=0)
    cfg = SimpleNamespace(val_fraction=0.2, max_train=None, max_test=None, n_pseudo_labels=4)
    return prepare_splits(raw, spec.resolved("binary"), data, cfg, seed=0)


def test_prepare_inputs_reproduces_the_prepare_stage_for_masked_normalised_data():
    rng = np.random.default_rng(0)
    raw = RawTask(train=_padded(rng, 80), test=_padded(rng, 30))
    splits, stats = _prepared(raw)
    normalisation = {"applied": True, **stats}
    for mask in (raw.test.mask, None):  # None: the mask is read off the right padding
        x, got_mask = prepare_inputs(raw.test.x, normalisation, (3, 12), masked=True, mask=mask)
        np.testing.assert_array_equal(x, splits["test"].x)
        np.testing.assert_array_equal(got_mask, splits["test"].mask)
    assert abs(splits["test"].x[:, 0][splits["test"].mask].mean()) < 0.5  # normalised (raw mean 3)


def test_shorter_sequences_are_padded_for_masked_models_only():
    x = np.ones((2, 3, 8), dtype=np.float32)
    off = {"applied": False, "mean": [0.0] * 3, "std": [1.0] * 3}
    padded, mask = prepare_inputs(x, off, (3, 12), masked=True)
    assert padded.shape == (2, 3, 12) and (padded[:, :, 8:] == 0).all()
    assert mask.shape == (2, 12) and mask[:, :8].all() and not mask[:, 8:].any()
    with pytest.raises(DataError, match=r"data.npz \(test\) has samples of shape \(3, 8\); this model expects"):
        prepare_inputs(x, off, (3, 12), masked=False, where="data.npz (test)")
    series, none = prepare_inputs(np.ones((4, 12)), off, (1, 12), masked=False)  # (N, L): one channel
    assert series.shape == (4, 1, 12) and none is None


def _meta(**changes) -> PreparedMeta:
    values = dict(
        task="t",
        task_type="binary",
        metric="accuracy",
        higher_is_better=True,
        source="s",
        class_names=["0", "1"],
        n_classes=2,
        n_out=1,
        input_shape=[4, 8],
        target_shape=[],
        masked=False,
        sizes={"train": 10, "val": 2, "test": 2},
        group_counts={"train": [5, 5], "val": [1, 1]},
        target_stats=None,
        normalisation={"applied": False},
        difference_stds=[1.0, 0.5],
        augment_rc=False,
    )
    return PreparedMeta(**{**values, **changes})


def test_prepared_meta_round_trips_and_names_what_is_missing(tmp_path):
    meta = _meta()
    write_meta(tmp_path / "meta.json", meta)
    assert PreparedMeta.read(tmp_path / "meta.json") == meta
    raw = meta.to_json()
    del raw["difference_stds"], raw["metric"]  # the first is optional (older prepares), the second not
    (tmp_path / "old.json").write_text(json.dumps(raw))
    with pytest.raises(DataError, match=r"old.json lacks metric"):
        PreparedMeta.read(tmp_path / "old.json")
    raw["metric"] = "accuracy"
    (tmp_path / "old.json").write_text(json.dumps(raw))
    assert PreparedMeta.read(tmp_path / "old.json").difference_stds is None
    with pytest.raises(DataError, match=r"nothing.json is missing or not JSON"):
        PreparedMeta.read(tmp_path / "nothing.json")


def test_serving_file_carries_the_normalisation_and_is_required(tmp_path):
    meta = _meta(normalisation={"applied": True, "mean": [1.0], "std": [2.0]}, class_names=["a", "b"])
    files = serving_files(meta)
    assert list(files) == [SERVING_FILE] and "sizes" not in files[SERVING_FILE]
    with pytest.raises(CheckpointError, match="re-run the fit stage|normalisation is unknown"):
        read_serving(tmp_path)
    (tmp_path / SERVING_FILE).write_text(json.dumps(files[SERVING_FILE]))
    assert read_serving(tmp_path)["normalisation"]["std"] == [2.0]
