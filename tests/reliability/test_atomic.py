"""Atomic writes under SIGKILL: the destination never goes missing (where the OS can swap two
directories), a killed writer's temporary entries are cleaned up by the next write or by
``recover``, and a live writer's are left alone."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from components.atomic import atomic_dir, atomic_path, recover

pytestmark = pytest.mark.reliability

ROOT = Path(__file__).resolve().parents[2]

# Writes "new" into the file argv[1] + ".json" (atomic_path) and the directory argv[1]
# (atomic_dir); argv[2]: "fallback" forces the two-rename path, "kill-in-file" and
# "kill-in-dir" die inside that block.
WRITER = """
import os, signal, sys
from pathlib import Path
import components.atomic as atomic
d, mode = Path(sys.argv[1]), sys.argv[2]
if mode == "fallback":
    atomic._exchange = lambda a, b: False
with atomic.atomic_path(d.with_suffix(".json")) as t:
    t.write_text("new")
    if mode == "kill-in-file":
        os.kill(os.getpid(), signal.SIGKILL)
with atomic.atomic_dir(d) as t:
    (t / "v").write_text("new")
    if mode == "kill-in-dir":
        os.kill(os.getpid(), signal.SIGKILL)
"""


def _write(d: Path, mode: str, fault: str = "") -> int:
    env = {"PATH": "/usr/bin:/bin", "RECRAFT_FAULT": fault}
    proc = subprocess.run([sys.executable, "-c", WRITER, str(d), mode], cwd=ROOT, env=env, capture_output=True)
    return proc.returncode


def _old(d: Path) -> None:
    with atomic_dir(d) as t:
        (t / "v").write_text("old")
    with atomic_path(d.with_suffix(".json")) as t:
        t.write_text("old")


def _hidden(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_a_kill_between_the_renames_leaves_the_new_directory_in_place(tmp_path):
    d = tmp_path / "d"
    _old(d)
    assert _write(d, "swap", fault="d:atomic_rename") == -signal.SIGKILL
    assert (d / "v").read_text() == "new"  # swapped in one step: never missing
    assert _hidden(tmp_path), "the kill should leave the previous directory behind"
    with atomic_dir(d) as t:  # the next write of the same path cleans up
        (t / "v").write_text("newer")
    assert (d / "v").read_text() == "newer" and _hidden(tmp_path) == []


def test_without_a_one_step_swap_a_kill_between_the_renames_is_repaired(tmp_path):
    d = tmp_path / "d"
    _old(d)
    assert _write(d, "fallback", fault="d:atomic_rename") == -signal.SIGKILL
    assert not d.exists()  # the fallback's window: the previous directory is aside
    recover(tmp_path)  # what recraft run does on its workspace before anything reads it
    assert (d / "v").read_text() == "old" and _hidden(tmp_path) == []


@pytest.mark.parametrize("mode", ["kill-in-file", "kill-in-dir"])
def test_a_kill_inside_the_block_leaves_the_old_contents_and_nothing_after_the_next_write(tmp_path, mode):
    d = tmp_path / "d"
    _old(d)
    assert _write(d, mode) == -signal.SIGKILL
    assert (d / "v").read_text() == "old"
    assert d.with_suffix(".json").read_text() == ("old" if mode == "kill-in-file" else "new")
    assert len(_hidden(tmp_path)) == 1  # the killed block's temporary entry
    assert _write(d, "swap") == 0  # a re-run
    assert d.with_suffix(".json").read_text() == "new" and (d / "v").read_text() == "new"
    assert _hidden(tmp_path) == []


def test_a_live_writers_temporary_entries_are_left_alone(tmp_path):
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        live = [tmp_path / f".d.{sleeper.pid}.abc.tmp", tmp_path / f".d.{sleeper.pid}.old"]
        for p in live:
            p.mkdir()
        recover(tmp_path)
        with atomic_dir(tmp_path / "d") as t:
            (t / "v").write_text("x")
        assert all(p.exists() for p in live)
    finally:
        sleeper.kill()
        sleeper.wait()
    recover(tmp_path)  # now its writer is dead: the .old is dropped, as d exists
    assert _hidden(tmp_path) == []
