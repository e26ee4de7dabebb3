"""Schema and quality of the real DNA task and of its prepared splits."""

import hashlib

import numpy as np
import pytest

from components.data import Split, train_val_split
from components.errors import DataError
from components.task_loaders import one_hot_dna, read_fasta
from components.tasks import get_task


@pytest.fixture(scope="module")
def raw(asset_dir):
    return get_task("dna").loader(asset_dir / "janggu-dna", None)


def test_shapes_dtypes_and_sizes(raw):
    assert raw.train.x.shape == (7797, 4, 200) and raw.train.x.dtype == np.float32
    assert raw.test.x.shape == (200, 4, 200)
    assert raw.train.y.dtype == np.int64 and set(np.unique(raw.train.y)) == {0, 1}


def test_one_hot_is_valid(raw):
    col_sums = raw.train.x.sum(axis=1)
    assert set(np.unique(col_sums)) <= {0.0, 1.0}  # 0 only for ambiguous bases
    assert (col_sums == 1).mean() > 0.99
    assert np.isfinite(raw.train.x).all()


def test_classes_are_balanced(raw):
    counts = np.bincount(raw.train.y)
    print("train class counts (Mafk, Oct4):", counts.tolist(), "test:", np.bincount(raw.test.y).tolist())
    assert abs(counts[0] - counts[1]) / counts.sum() < 0.01
    assert np.bincount(raw.test.y).tolist() == [100, 100]


def stratified_split(x, y, fraction, seed):
    return train_val_split(Split(x, y, groups=y), fraction, seed, stratify=True)


def _row_hashes(x):
    return {hashlib.sha1(row.tobytes()).hexdigest() for row in x}


def test_splits_do_not_overlap(raw):
    train, val = stratified_split(raw.train.x, raw.train.y, 0.1, seed=0)
    assert len(train) + len(val) == len(raw.train.y)
    h_train, h_val, h_test = _row_hashes(train.x), _row_hashes(val.x), _row_hashes(raw.test.x)
    # Identical peaks may occur twice in a ChIP-seq file; what matters is that no *sample index*
    # is reused and no test sequence appears in train or val.
    assert not (h_test & h_train) and not (h_test & h_val)
    assert abs(val.y.mean() - 0.5) < 0.01


def test_split_is_reproducible_and_seeded(raw):
    a, _ = stratified_split(raw.train.x, raw.train.y, 0.1, seed=0)
    b, _ = stratified_split(raw.train.x, raw.train.y, 0.1, seed=0)
    c, _ = stratified_split(raw.train.x, raw.train.y, 0.1, seed=1)
    assert np.array_equal(a.y, b.y) and np.array_equal(a.x, b.x)
    assert not np.array_equal(a.x, c.x)


def test_fasta_reader_joins_multiline_records(tmp_path):
    f = tmp_path / "x.fa"
    f.write_text(">a\nACG\nT\n>b\nNNAC\n")
    assert read_fasta(f) == ["ACGT", "NNAC"]
    x = one_hot_dna(read_fasta(f))
    assert x.shape == (2, 4, 4)
    assert x[1, :, 0].sum() == 0 and x[1, 0, 2] == 1 and x[1, 1, 3] == 1


def test_unequal_lengths_and_empty_files_are_refused(tmp_path):
    f = tmp_path / "x.fa"
    f.write_text(">a\nACG\n>b\nAC\n")
    with pytest.raises(DataError, match="unequal lengths"):
        one_hot_dna(read_fasta(f), source=str(f))
    e = tmp_path / "empty.fa"
    e.write_text("")
    with pytest.raises(DataError, match="holds no sequences"):
        read_fasta(e)
