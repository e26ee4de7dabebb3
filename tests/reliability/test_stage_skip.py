"""``recraft run`` skips a finished stage only while what it read is unchanged: its params and,
for a user's data file, the file's contents (the end-to-end case is in test_cli_resume.py)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from components.atomic import write_json

pytestmark = pytest.mark.reliability


def _context(tmp_path, task: str):
    from flows.params import apply_overrides, parse_params
    from flows.pipeline import make_context
    from flows.settings import load_settings

    return make_context(parse_params(apply_overrides({}, [f"task={task}"])), load_settings(device="cpu"), tmp_path)


def _finish(ctx, stages) -> None:
    """Leave the markers a run leaves after ``stages``."""
    from flows.pipeline import stage_fingerprint

    for name in stages:
        write_json(ctx.layout.done_marker(name), {"fingerprint": stage_fingerprint(ctx.params, name), "stage": name})


def test_editing_a_user_data_file_in_place_unfinishes_every_stage(tmp_path):
    from flows.pipeline import ORDER, finished_stages

    data = tmp_path / "data.npz"
    np.savez(data, x_train=np.zeros((8, 2, 4), np.float32), y_train=np.arange(8) % 2)
    ctx = _context(tmp_path / "ws", f"npz:{data}")
    _finish(ctx, ORDER)
    assert finished_stages(ctx) == ORDER
    np.savez(data, x_train=np.ones((8, 2, 4), np.float32), y_train=np.arange(8) % 2)  # same size
    assert finished_stages(ctx) == ()


def test_a_registered_tasks_markers_keep_their_fingerprint(tmp_path):
    """Markers written before data files were fingerprinted stay valid: no needless re-runs."""
    from flows.pipeline import stage_fingerprint

    ctx = _context(tmp_path, "dna")
    params = ctx.params.model_dump(mode="json")
    picked = {"task": params["task"], "model.body": params["model"]["body"]}
    assert (
        stage_fingerprint(ctx.params, "assets")
        == hashlib.sha256(json.dumps(picked, sort_keys=True).encode()).hexdigest()
    )
