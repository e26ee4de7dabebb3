"""Damaged ``.npz`` files: cut short, one byte flipped inside an array, or holding Python objects.

Each is refused with one ``error:`` line naming the file (exit 2, no traceback), and nothing is
written: by the shared reader (:func:`components.npzfile.read_npz`), by the prepared-split reader,
and by ``recraft run --task npz:F`` and ``recraft predict --input F`` in-process. A run whose
prepared ``test.npz`` is damaged is checked in ``tests/data/test_user_data.py``, on the finished
workspace of its one end-to-end run.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from components.data import Split, load_split, save_split
from components.errors import DataError
from components.npzfile import read_npz
from flows.cli import app

pytestmark = pytest.mark.reliability


def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.normal(size=(40, 2, 16)).astype(np.float32),
        "y_train": np.arange(40) % 2,
        "x_test": rng.normal(size=(20, 2, 16)).astype(np.float32),
        "y_test": np.arange(20) % 2,
    }


def _cut(path: Path) -> None:
    """Half the file's bytes, as a copy or download that stopped midway."""
    np.savez(path, **_arrays())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip_inside(path: Path, member: str) -> None:
    """Flip one byte three quarters into ``member``'s stored bytes: past its .npy header, in the data."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
    data = bytearray(path.read_bytes())
    local = info.header_offset  # a local file header: 30 bytes, then the name and the extra field
    start = local + 30 + int.from_bytes(data[local + 26 : local + 28], "little")
    start += int.from_bytes(data[local + 28 : local + 30], "little")
    data[start + info.compress_size * 3 // 4] ^= 0xFF
    path.write_bytes(bytes(data))
    with zipfile.ZipFile(path) as zf:  # the flip landed in the member: its CRC check now fails
        assert zf.testzip() == member


def _flip(path: Path, compressed: bool = False) -> None:
    """``x_train`` with one byte of its data flipped (stored, or deflated)."""
    (np.savez_compressed if compressed else np.savez)(path, **_arrays())
    _flip_inside(path, "x_train.npy")


def _objects(path: Path) -> None:
    """A ragged ``x_test`` saved as an object array (numpy pickles it)."""
    np.savez(path, **{**_arrays(), "x_test": np.array([np.zeros(3), np.zeros(4)], dtype=object)})


DAMAGE = {
    "cut-in-half": (_cut, "truncated or corrupt"),
    "byte-flipped": (_flip, "array 'x_train' is truncated or corrupt"),
    "byte-flipped-compressed": (lambda p: _flip(p, compressed=True), "array 'x_train' is truncated or corrupt"),
    "object-array": (_objects, "array 'x_test' holds Python objects (dtype object)"),
}


def _snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` with the sha256 of its bytes."""
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.mark.parametrize("case", DAMAGE)
def test_reader_names_the_file_and_the_damage(tmp_path, case):
    damage, words = DAMAGE[case]
    path = tmp_path / "data.npz"
    damage(path)
    with pytest.raises(DataError) as info:
        read_npz(path, hint="write it again")
    message = str(info.value)
    assert str(path) in message and words in message, message
    assert "pickled" not in message and "allow_pickle" not in message  # our words, not numpy's


def test_reader_refuses_a_file_that_is_not_a_zip_archive(tmp_path):
    path = tmp_path / "data.npz"
    path.write_bytes(b"\x80\x04K\x01.")  # a pickle: np.load would call it "pickled data"
    with pytest.raises(DataError, match="it is not a zip archive of arrays") as info:
        read_npz(path, hint="write it again")
    assert info.value.hint == "write it again"


@pytest.mark.parametrize("case", ["cut-in-half", "byte-flipped"])
def test_prepared_split_that_is_damaged_is_a_data_error(tmp_path, case):
    path = tmp_path / "test.npz"
    save_split(path, Split(np.zeros((4, 1, 8), np.float32), np.arange(4) % 2, groups=np.arange(4) % 2))
    assert len(load_split(path)) == 4
    if case == "cut-in-half":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        _flip_inside(path, "x.npy")
    with pytest.raises(DataError) as info:
        load_split(path)
    assert str(path) in str(info.value) and info.value.hint == "run the prepare stage again"


def _one_error_line(result, path: Path, words: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len([line for line in lines if line.startswith("error: ")]) == 1, lines
    assert lines[0].startswith("error: ") and str(path) in lines[0] and words in lines[0], lines
    assert all(line.startswith(("error: ", "hint: ")) for line in lines), lines
    assert "Traceback" not in result.output + result.stderr


@pytest.fixture
def cli_env(tmp_path, monkeypatch):
    """A fresh directory to run in (no params.yaml), tracking in it."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    return {"RECRAFT_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}", "RECRAFT_DEVICE": "cpu"}


@pytest.mark.parametrize("case", DAMAGE)
def test_run_with_damaged_user_data_exits_2_and_writes_nothing(tmp_path, cli_env, case):
    damage, words = DAMAGE[case]
    path = tmp_path / "cwd" / "data.npz"
    damage(path)
    before = _snapshot(tmp_path)
    result = CliRunner().invoke(app, ["run", "--task", f"npz:{path}", "--workdir", "w"], env=cli_env)
    _one_error_line(result, path, words)
    assert _snapshot(tmp_path) == before  # no workspace, no tracking store, the file untouched


@pytest.mark.parametrize("case", DAMAGE)
def test_predict_with_damaged_input_exits_2_and_writes_nothing(tmp_path, cli_env, case):
    damage, words = DAMAGE[case]
    path = tmp_path / "cwd" / "inputs.npz"
    damage(path)
    before = _snapshot(tmp_path)
    args = ["predict", "--model", str(tmp_path / "model"), "--input", str(path), "--output", "out.npz"]
    result = CliRunner().invoke(app, args, env=cli_env)
    _one_error_line(result, path, words)
    assert _snapshot(tmp_path) == before
