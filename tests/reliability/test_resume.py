"""Kill align and fit with SIGKILL between checkpoints, inside a checkpoint save and between the
renames of its atomic replacement; re-run, and get exactly the uninterrupted result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.reliability

ROOT = Path(__file__).resolve().parents[2]
# Both stages checkpoint every 2 steps (resume_worker.EVERY) and at each epoch's end. align runs
# 3 epochs x 3 steps: saves after steps 2, 3, 4, 6, 6, 8, 9. fit runs 3 epochs x 5 steps: saves
# after steps 2, 4, 5, 6, 8, 10, 10, 12, 14, 15. The kills hit one workdir in turn, each re-run
# resuming from what the last one left (counts are per process): (RECRAFT_FAULT, what it leaves
# in the workdir besides the checkpoint: the temporary entry of an interrupted atomic_dir).
KILLS = [
    ("align:save=1", ".align."),  # inside the first save: nothing to resume, start over
    ("align:step=3", None),  # between checkpoints (after step 2's): step 3 is replayed
    ("align:atomic_rename=2", ".align."),  # step 4's state swapped in, step 3's not yet removed
    ("fit:step=3", None),  # align resumes from step 4 and finishes; fit dies after step 3
    ("fit:save=2", ".fit."),  # inside the save of step 5 (epoch end): a half-written state
    ("fit:atomic_rename=2", ".fit."),  # step 6's state swapped in
]


def _worker(workdir: Path, fault: str = "") -> subprocess.CompletedProcess:
    workdir.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "tests.reliability.resume_worker", str(workdir)]
    env = {**os.environ, "RECRAFT_FAULT": fault}
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("uninterrupted")
    proc = _worker(work)
    assert proc.returncode == 0, proc.stderr
    return json.loads((work / "result.json").read_text())


def test_sigkills_then_reruns_give_the_uninterrupted_result(reference, tmp_path):
    for fault, left in KILLS:
        killed = _worker(tmp_path, fault)
        assert killed.returncode == -signal.SIGKILL, (fault, killed.stderr)
        assert not (tmp_path / "result.json").exists()
        if left is not None:  # the kill landed inside the save, not before or after it
            assert any(p.name.startswith(left) for p in tmp_path.iterdir()), fault
    resumed = _worker(tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["weights_sha256"] == reference["weights_sha256"]
    assert result == reference  # histories too: every logged number is identical
    # The step curve (resume_worker.LOG_EVERY = 3) is whole: each window once, in order, the
    # last one ending where the fit ended, although the kills cut windows and replayed steps.
    steps = [r["step"] for r in reference["curve"]]
    assert steps == sorted(set(steps)) and all(s % 3 == 0 for s in steps[:-1]), steps
    assert steps[-1] == reference["fit"][-1]["step"] > steps[-2]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["align.json", "embedder.safetensors", "result.json"]  # no checkpoint, no temporary entry


def test_a_changed_config_does_not_resume_stale_state(tmp_path):
    from components.checkpoints import TrainingCheckpoint

    TrainingCheckpoint(tmp_path / "c", "config-a").save({"w": __import__("torch").zeros(2)}, {"progress": {}})
    assert TrainingCheckpoint(tmp_path / "c", "config-b").load() is None
    assert TrainingCheckpoint(tmp_path / "c", "config-a").load() is not None
