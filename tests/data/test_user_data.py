"""Bring-your-own data: task-type inference, reading, and one clear error per bad input.

Every bad case asserts that the message names the file and the array, says what was wrong, and
that nothing was written (the checks run before any output exists).
"""

from __future__ import annotations

import numpy as np
import pytest

from components.config import DataParams
from components.data import infer_task_type
from components.errors import DataError, UserError
from components.tasks import get_task, load_npz, preflight


def _good(n: int = 40, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.normal(size=(n, 2, 16)).astype(np.float32),
        "y_train": np.arange(n) % 2,
        "x_test": rng.normal(size=(n // 2, 2, 16)).astype(np.float32),
        "y_test": np.arange(n // 2) % 2,
    }


def _write(tmp_path, arrays, name="data.npz"):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def _check(path, task_type=None):
    return preflight(get_task(f"npz:{path}"), DataParams(task_type=task_type))


def test_good_file_passes_and_reshapes_univariate_series(tmp_path):
    arrays = _good()
    assert _check(_write(tmp_path, arrays)) == "binary"
    arrays["x_train"], arrays["x_test"] = arrays["x_train"][:, 0], arrays["x_test"][:, 0]  # (N, L)
    raw = load_npz(_write(tmp_path, arrays, "uni.npz"))
    assert raw.train.x.shape == (40, 1, 16) and raw.val is None


@pytest.mark.parametrize(
    ("y_train", "x_shape", "expected"),
    [
        (np.arange(30) % 2, (30, 1, 8), "binary"),
        (np.arange(30) % 5, (30, 1, 8), "multiclass"),
        ((np.arange(60).reshape(30, 2) % 3 == 0).astype(np.int64), (30, 1, 8), "multilabel"),
        (np.linspace(0, 1, 30).astype(np.float32), (30, 1, 8), "regression"),
        (np.zeros((30, 3), np.float32), (30, 1, 8), "regression"),
        (np.zeros((30, 2, 8), np.float32), (30, 1, 8), "field"),
        (np.zeros((30, 1, 4, 4), np.float32), (30, 1, 4, 4), "field"),
    ],
)
def test_task_type_inference(y_train, x_shape, expected):
    assert infer_task_type(np.zeros(x_shape, np.float32), y_train) == expected


def _mutate(**changes):
    arrays = _good()
    for key, value in changes.items():
        if value is None:
            arrays.pop(key)
        else:
            arrays[key] = value(arrays) if callable(value) else value
    return arrays


def _nan(a):
    x = a["x_train"].copy()
    x[3, 1, 5] = np.nan
    return x


def _inf_y(a):
    y = np.linspace(0, 1, 40).astype(np.float32)
    y[7] = np.inf
    return y


# (case id, arrays, task_type override, words the message must hold)
BAD = [
    ("nan-in-x", _mutate(x_train=_nan), None, ["(train)", "'x'", "NaN or inf"]),
    ("inf-in-y", _mutate(y_train=_inf_y, y_test=np.linspace(0, 1, 20).astype(np.float32)), None, ["'y'", "NaN or inf"]),
    ("lengths", _mutate(y_train=lambda a: a["y_train"][:-3]), None, ["x has 40 samples but y has 37"]),
    ("x-ndim-5", _mutate(x_train=np.zeros((40, 1, 2, 2, 2), np.float32)), None, ["'x'", "expected (N, C, L)"]),
    ("x-ndim-1", _mutate(x_train=np.zeros(40, np.float32)), None, ["'x'", "expected (N, C, L)"]),
    ("single-class", _mutate(y_train=np.zeros(40, np.int64), y_test=np.zeros(20, np.int64)), None, ["single class"]),
    (
        "empty-test",
        _mutate(x_test=np.zeros((0, 2, 16), np.float32), y_test=np.zeros(0, np.int64)),
        None,
        ["(test)", "empty"],
    ),
    (
        "unseen-test-label",
        _mutate(y_test=lambda a: np.where(np.arange(20) == 0, 2, a["y_test"])),
        None,
        ["(test)", "[2]", "never occur in training"],
    ),
    ("missing-key", _mutate(x_test=None, y_test=None), None, ["'x_test' is missing"]),
    ("missing-partner", _mutate(y_test=None), None, ["'y_test' is missing"]),
    (
        "field-shape",
        _mutate(y_train=np.zeros((40, 1, 9), np.float32), y_test=np.zeros((20, 1, 9), np.float32)),
        "field",
        ["'y'", "spatial"],
    ),
    (
        "multilabel-values",
        _mutate(y_train=np.full((40, 3), 2), y_test=np.full((20, 3), 2)),
        "multilabel",
        ["'y'", "0/1 matrix"],
    ),
    (
        "val-shape",
        _mutate(x_val=np.zeros((5, 3, 16), np.float32), y_val=np.zeros(5, np.int64)),
        None,
        ["(val)", "'x'", "shape"],
    ),
    ("string-labels", _mutate(y_train=np.array(["a", "b"] * 20)), None, ["'y_train'", "dtype"]),
]


@pytest.mark.parametrize(("case", "arrays", "task_type", "words"), BAD, ids=[b[0] for b in BAD])
def test_bad_user_data_gets_one_clear_error(tmp_path, case, arrays, task_type, words):
    path = _write(tmp_path, arrays)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(DataError) as info:
        _check(path, task_type)
    message = str(info.value)
    assert str(path) in message, message
    for word in words:
        assert word in message, (case, message)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_unreadable_file_is_refused(tmp_path):
    path = tmp_path / "broken.npz"
    path.write_text("this is not a zip archive")
    with pytest.raises(DataError, match=f"cannot read {path} as .npz"):
        _check(path)


def test_task_type_override_must_agree_with_a_registered_task():
    with pytest.raises(UserError, match="contradicts"):
        from components.tasks import RawTask, resolve_task_type

        resolve_task_type(get_task("dna"), RawTask(train=None, test=None), "regression")


def test_missing_user_file_names_the_path(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        get_task(f"npz:{tmp_path / 'nope.npz'}")


def test_cli_refuses_bad_user_data_with_exit_2_and_writes_nothing(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    path = _write(tmp_path, _mutate(x_train=_nan))
    workdir = tmp_path / "work"
    recraft = Path(sys.executable).with_name("recraft")
    proc = subprocess.run(
        [str(recraft), "run", "--task", f"npz:{path}", "--workdir", str(workdir)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "NaN or inf" in proc.stderr and str(path) in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not workdir.exists()
