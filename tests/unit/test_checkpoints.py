"""Checkpoints are safetensors + JSON; a pickle or a foreign config is refused."""

import pickle

import pytest
import torch
from torch import nn

from components.checkpoints import load_checkpoint, save_checkpoint
from components.errors import CheckpointError


def test_round_trip(tmp_path):
    torch.manual_seed(0)
    a, b = nn.Linear(4, 3), nn.Linear(4, 3)
    save_checkpoint(tmp_path / "ck", a, {"kind": "demo", "d": 4})
    cfg = load_checkpoint(tmp_path / "ck", b, {"kind": "demo"})
    assert cfg["d"] == 4
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_crafted_pickle_is_refused(tmp_path):
    save_checkpoint(tmp_path / "ck", nn.Linear(4, 3), {"kind": "demo"})
    (tmp_path / "ck" / "weights.safetensors").write_bytes(pickle.dumps({"weight": _Evil()}))
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        load_checkpoint(tmp_path / "ck", nn.Linear(4, 3))


def test_checkpoint_from_another_config_is_refused(tmp_path):
    save_checkpoint(tmp_path / "ck", nn.Linear(4, 3), {"kind": "demo", "task": "dna"})
    with pytest.raises(CheckpointError, match="task='dna'"):
        load_checkpoint(tmp_path / "ck", nn.Linear(4, 3), {"task": "ecg"})


def test_wrong_shapes_are_refused(tmp_path):
    save_checkpoint(tmp_path / "ck", nn.Linear(4, 3), {"kind": "demo"})
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(tmp_path / "ck", nn.Linear(5, 3))


def test_atomic_outputs_are_readable_by_others(tmp_path):
    import os
    import stat

    from components.atomic import atomic_dir, write_json

    old = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
        with atomic_dir(tmp_path / "d") as d:
            (d / "f").write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755


@pytest.mark.parametrize("damaged", ["state.safetensors", "state.json"])
def test_an_unreadable_training_state_is_set_aside_and_training_restarts(tmp_path, caplog, damaged):
    import logging

    from components.checkpoints import TrainingCheckpoint

    ckpt = TrainingCheckpoint(tmp_path / "fit", "config-a")
    ckpt.save({"w": torch.ones(3)}, {"progress": {}})
    bad = tmp_path / "fit" / damaged
    bad.write_bytes(b"\x00" * 64)
    with caplog.at_level(logging.WARNING, logger="components.checkpoints"):
        assert ckpt.load() is None  # no error: the stage starts from scratch
    [aside] = tmp_path.glob("fit.corrupt-*")
    assert (aside / damaged).read_bytes() == b"\x00" * 64  # kept, not deleted
    [record] = caplog.records  # one warning, on one line, naming the file and where it went
    message = record.getMessage()
    assert "\n" not in message and str(bad) in message and str(aside / damaged) in message
    assert ckpt.load() is None  # a re-run does not trip over it again
    ckpt.save({"w": torch.zeros(3)}, {"progress": {}})
    assert ckpt.load() is not None
    ckpt.clear()  # the stage's clean-up leaves the set-aside copy alone
    assert (aside / damaged).exists()
