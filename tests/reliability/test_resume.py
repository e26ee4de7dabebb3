"""Kill align and fit with SIGKILL at random steps, re-run, and get exactly the uninterrupted result."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.reliability

ROOT = Path(__file__).resolve().parents[2]
ALIGN_STEPS = 9  # 3 epochs x 3 steps (resume_worker.ALIGN)
FIT_STEPS = 15  # 3 epochs x ceil(160 / 32) steps (resume_worker.FIT)


def _worker(workdir: Path, *flags: str) -> subprocess.CompletedProcess:
    workdir.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "tests.reliability.resume_worker", str(workdir), *flags]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("uninterrupted")
    proc = _worker(work)
    assert proc.returncode == 0, proc.stderr
    return json.loads((work / "result.json").read_text())


def _kill_points() -> list[tuple[str, int]]:
    rng = np.random.default_rng(2026)  # fixed: the same points every run
    align = sorted(int(s) for s in rng.choice(np.arange(1, ALIGN_STEPS + 1), 3, replace=False))
    fit = sorted(int(s) for s in rng.choice(np.arange(1, FIT_STEPS + 1), 4, replace=False))
    return [("align", s) for s in align] + [("fit", s) for s in fit]


@pytest.mark.parametrize(("stage", "step"), _kill_points())
def test_sigkill_then_rerun_gives_the_uninterrupted_result(reference, tmp_path, stage, step):
    killed = _worker(tmp_path, f"--kill-{stage}", str(step))
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (tmp_path / "result.json").exists()
    resumed = _worker(tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["weights_sha256"] == reference["weights_sha256"]
    assert result == reference  # histories too: every logged number is identical


def test_a_changed_config_does_not_resume_stale_state(tmp_path):
    from components.checkpoints import TrainingCheckpoint

    TrainingCheckpoint(tmp_path / "c", "config-a").save({"w": __import__("torch").zeros(2)}, {"progress": {}})
    assert TrainingCheckpoint(tmp_path / "c", "config-b").load() is None
    assert TrainingCheckpoint(tmp_path / "c", "config-a").load() is not None
