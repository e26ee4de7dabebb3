"""PDEBench HDF5 layouts: round trips through the writers, and refusals of malformed files."""

import re

import h5py
import numpy as np
import pytest

from components.errors import DataError
from components.pdebench import read_pdebench, write_pdebench_1d, write_pdebench_darcy


@pytest.fixture
def tensor_1d():
    """(N=6, T=5, X=8): value = 100 n + 10 t + x / 10, so every entry says where it came from."""
    n, t, x = np.meshgrid(np.arange(6), np.arange(5), np.arange(8), indexing="ij")
    return (100 * n + 10 * t + x / 10).astype(np.float32)


def _raises(path, key):
    """pytest.raises for a DataError naming both ``path`` and ``'key'``."""
    return pytest.raises(DataError, match=rf"{re.escape(str(path))}.*'{re.escape(key)}'")


def test_1d_round_trip_defaults_to_the_last_snapshot(tmp_path, tensor_1d):
    path = tmp_path / "1D_Advection_Sols_beta0.4.hdf5"
    write_pdebench_1d(path, tensor_1d, x_coord=np.linspace(0, 1, 8), t_coord=np.linspace(0, 2, 6))
    with h5py.File(path, "r") as f:  # exactly PDEBench's keys
        assert set(f.keys()) == {"tensor", "x-coordinate", "t-coordinate"}
    x, y = read_pdebench(path)
    assert x.shape == (6, 1, 8) and y.shape == (6, 1, 8)
    assert x.dtype == np.float32 and y.dtype == np.float32
    np.testing.assert_array_equal(x, tensor_1d[:, 0:1])
    np.testing.assert_array_equal(y, tensor_1d[:, 4:5])


def test_1d_equally_spaced_snapshots_and_max_samples(tmp_path, tensor_1d):
    path = tmp_path / "a.hdf5"
    write_pdebench_1d(path, tensor_1d)
    x, y = read_pdebench(path, n_snapshots=2, max_samples=3)
    assert x.shape == (3, 1, 8) and y.shape == (3, 2, 8)
    np.testing.assert_array_equal(y, tensor_1d[:3, [2, 4]])
    _, y4 = read_pdebench(path, n_snapshots=4, max_samples=100)  # a cap, not a demand
    np.testing.assert_array_equal(y4, tensor_1d[:, 1:])


def test_1d_snapshots_must_be_equally_spaced(tmp_path, tensor_1d):
    path = tmp_path / "a.hdf5"
    write_pdebench_1d(path, tensor_1d)
    with _raises(path, "tensor"):
        read_pdebench(path, n_snapshots=3)  # 4 steps after t=0 cannot be split in 3


def test_darcy_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    nu = rng.uniform(0.1, 1.0, size=(5, 4, 6)).astype(np.float32)
    sol = rng.normal(size=(5, 1, 4, 6)).astype(np.float32)
    path = tmp_path / "2D_DarcyFlow_beta1.0_Train.hdf5"
    write_pdebench_darcy(path, nu, sol)
    x, y = read_pdebench(path)
    assert x.shape == (5, 1, 4, 6) and y.shape == (5, 1, 4, 6)
    np.testing.assert_array_equal(x[:, 0], nu)
    np.testing.assert_array_equal(y, sol)
    x2, y2 = read_pdebench(path, max_samples=2)
    np.testing.assert_array_equal(x2[:, 0], nu[:2])
    np.testing.assert_array_equal(y2, sol[:2])


def test_writes_are_atomic(tmp_path, tensor_1d):
    path = tmp_path / "a.hdf5"
    write_pdebench_1d(path, tensor_1d)
    with pytest.raises(ValueError, match="x_coord"):
        write_pdebench_1d(path, tensor_1d[:1], x_coord=np.zeros(3))
    np.testing.assert_array_equal(read_pdebench(path)[1], tensor_1d[:, 4:5])  # untouched
    assert [p.name for p in tmp_path.iterdir()] == ["a.hdf5"]  # no temporary left behind


def test_not_an_hdf5_file(tmp_path):
    path = tmp_path / "fake.hdf5"
    path.write_text("tensor,1,2,3\n")
    with _raises(path, "tensor"):
        read_pdebench(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="missing.hdf5: file not found"):
        read_pdebench(tmp_path / "missing.hdf5")


def test_missing_key(tmp_path):
    path = tmp_path / "a.hdf5"
    with h5py.File(path, "w") as f:
        f["solution"] = np.zeros((2, 3, 4))
    with _raises(path, "tensor"):
        read_pdebench(path)
    path = tmp_path / "darcy.hdf5"
    with h5py.File(path, "w") as f:
        f["nu"] = np.ones((2, 4, 4))
    with _raises(path, "tensor"):
        read_pdebench(path)


@pytest.mark.parametrize(
    "datasets, key, expected",
    [
        ({"tensor": np.zeros((2, 8))}, "tensor", "(N, T, X)"),
        ({"tensor": np.zeros((2, 1, 4, 4))}, "tensor", "(N, T, X)"),
        ({"nu": np.ones((2, 4)), "tensor": np.zeros((2, 1, 4, 4))}, "nu", "(N, H, W)"),
        ({"nu": np.ones((2, 4, 4)), "tensor": np.zeros((2, 4, 4))}, "tensor", "(N, 1, H, W)"),
        ({"nu": np.ones((2, 4, 4)), "tensor": np.zeros((2, 1, 4, 5))}, "tensor", "(2, 1, 4, 4)"),
    ],
)
def test_wrong_dimensionality(tmp_path, datasets, key, expected):
    path = tmp_path / "a.hdf5"
    with h5py.File(path, "w") as f:
        for name, value in datasets.items():
            f[name] = value
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}.*'{key}'.*expected {re.escape(expected)}"):
        read_pdebench(path)


def test_nan_is_refused(tmp_path, tensor_1d):
    bad = tensor_1d.copy()
    bad[1, 4, 2] = np.nan
    path = tmp_path / "a.hdf5"
    write_pdebench_1d(path, bad)
    with _raises(path, "tensor"):
        read_pdebench(path)
    read_pdebench(path, max_samples=1)  # only the samples read are checked

    nu = np.ones((2, 4, 4), dtype=np.float32)
    nu[0, 0, 0] = np.inf
    path = tmp_path / "darcy.hdf5"
    write_pdebench_darcy(path, nu, np.zeros((2, 1, 4, 4)))
    with _raises(path, "nu"):
        read_pdebench(path)


@pytest.mark.parametrize(
    "datasets, key",
    [
        ({"tensor": np.zeros((0, 5, 8))}, "tensor"),
        ({"tensor": np.zeros((3, 5, 0))}, "tensor"),
        ({"nu": np.ones((0, 4, 4)), "tensor": np.zeros((0, 1, 4, 4))}, "nu"),
    ],
)
def test_empty_is_refused(tmp_path, datasets, key):
    path = tmp_path / "a.hdf5"
    with h5py.File(path, "w") as f:
        for name, value in datasets.items():
            f[name] = value
    with _raises(path, key):
        read_pdebench(path)
