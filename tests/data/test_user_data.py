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
from components.tasks import get_task, preflight
from components.user_data import load_npz


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
        from components.data import RawTask
        from components.tasks import resolve_task_type

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


def test_classes_too_small_to_stratify_fall_back_keeping_every_class_in_training():
    import warnings

    from components.data import Split, UnstratifiedSplit, train_val_split

    y = np.repeat(np.arange(52), 2)  # 52 classes x 2: a 0.1 share of each class rounds to none
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train, val = train_val_split(Split(np.zeros((104, 1, 4), np.float32), y, groups=y), 0.1, 0, stratify=True)
    assert len(val) == 10 and len(train) == 94 and set(train.y) == set(range(52))
    assert [w.category for w in caught] == [UnstratifiedSplit]
    for n_classes in (1, 3):  # one sample per class: no split without losing a class
        y = np.arange(n_classes)
        with pytest.raises(DataError, match="is the only one of its class"):
            train_val_split(Split(np.zeros((n_classes, 1, 4), np.float32), y, groups=y), 0.1, 0, stratify=True)


# ---------------------------------------------------------------- one tiny end-to-end run


def _small_classes(path) -> None:
    """52 classes of 2 training samples each (and 1 test sample each), a class-dependent mean."""
    rng = np.random.default_rng(0)
    y_train, y_test = np.repeat(np.arange(52), 2), np.arange(52)
    centre = rng.normal(size=(52, 1, 16)).astype(np.float32)
    x_train = centre[y_train] + 0.1 * rng.normal(size=(104, 1, 16)).astype(np.float32)
    x_test = centre[y_test] + 0.1 * rng.normal(size=(52, 1, 16)).astype(np.float32)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


def _hashes(root) -> dict[str, str]:
    """Every file under ``root`` with the sha256 of its bytes."""
    import hashlib

    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture(scope="module")
def small_classes_run(prefect_harness, wheel_cache, tmp_path_factory):
    """``recraft run --task npz:F`` in-process on :func:`_small_classes`, at the tiny budget of
    ``tests/conftest.py``, once: returns ``(workspace, args, env, result, warnings caught)``."""
    import warnings

    from typer.testing import CliRunner

    from flows.cli import app
    from tests.conftest import TINY

    root = tmp_path_factory.mktemp("small_classes")
    _small_classes(root / "small.npz")
    env = {
        "RECRAFT_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "RECRAFT_ARTIFACT_LOCATION": (root / "artifacts").as_uri(),
        "RECRAFT_WHEEL_CACHE": str(wheel_cache),
        "RECRAFT_DEVICE": "cpu",
    }
    args = ["run", "--task", f"npz:{root / 'small.npz'}", "--workdir", str(root / "ws")]
    args += [a for item in TINY for a in ("--set", item)]
    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings(record=True) as caught:
        mp.chdir(root)  # no params.yaml here: the defaults, as tiny_run
        warnings.simplefilter("always")
        result = CliRunner().invoke(app, args, env=env)
    return root / "ws", args, env, result, caught


@pytest.mark.slow
def test_52_classes_of_2_samples_run_end_to_end_with_one_warning(small_classes_run):
    from components.data import UnstratifiedSplit, load_split
    from components.layout import Layout

    ws, _, _, result, caught = small_classes_run
    assert result.exit_code == 0, (result.stderr[-3000:], result.exception)
    assert "test/accuracy" in result.stdout
    fallback = [str(w.message) for w in caught if issubclass(w.category, UnstratifiedSplit)]
    assert len(fallback) == 1, fallback
    assert fallback[0].startswith("52 of 52 classes are too small (smallest: 2 samples) for a stratified validation")
    assert "carved 10 of 104 samples at random" in fallback[0] and "\n" not in fallback[0]
    prepared = Layout(ws).prepared_dir
    train, val = load_split(prepared / "train.npz"), load_split(prepared / "val.npz")
    assert len(val) == 10 and set(train.y) == set(range(52))  # every class kept in training


@pytest.mark.slow
def test_a_damaged_prepared_test_split_stops_the_run_with_one_line(small_classes_run):
    """The evaluate stage, resumed on a cut-short ``test.npz``: exit 2, one line, nothing changed."""
    from typer.testing import CliRunner

    from components.layout import Layout
    from flows.cli import app

    ws, args, env, result, _ = small_classes_run
    assert result.exit_code == 0
    layout = Layout(ws)
    test, marker = layout.prepared_dir / "test.npz", layout.done_marker("evaluate")
    good_test, good_marker = test.read_bytes(), marker.read_bytes()
    test.write_bytes(good_test[: len(good_test) // 2])
    marker.unlink()  # evaluate runs again; the stages before it are finished
    try:
        before = _hashes(ws)
        with pytest.MonkeyPatch.context() as mp:
            mp.chdir(ws.parent)
            again = CliRunner().invoke(app, args, env=env)
        assert again.exit_code == 2, (again.stderr[-3000:], again.exception)
        errors = [line for line in again.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and str(test) in errors[0] and "truncated or corrupt" in errors[0], again.stderr
        assert "hint: run the prepare stage again" in again.stderr and "Traceback" not in again.stderr
        assert _hashes(ws) == before  # no partial outputs: nothing created, changed or removed
    finally:
        test.write_bytes(good_test)
        marker.write_bytes(good_marker)
