"""SIGTERM, and separately SIGKILL, sent to the top process only of ``recraft run``, ``recraft
repro`` or ``recraft ui`` stops every process the command started (temporary Prefect servers,
``dvc`` and its ``recraft stage`` processes, the MLflow server) within 10 s; a run killed inside
a stage and run again ends that stage's MLflow run as KILLED and gives the metrics and weights
of an uninterrupted run (:mod:`flows.supervise`).

Each command starts in a session of its own: the kill cannot reach pytest, and a process left
behind is found by its session id as well as by the pids recorded before the kill.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.flows.test_dvc_repro import repo  # noqa: F401 - fixture: a DVC workspace on tiny params
from tests.integration.test_s3_mirror import _free_port
from tests.reliability.test_cli_resume import RECRAFT, TINY, _outcome, _run, reference, shared  # noqa: F401

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

STOP_WITHIN_S = 10.0
SIGNALS = [pytest.param(signal.SIGTERM, id="SIGTERM"), pytest.param(signal.SIGKILL, id="SIGKILL")]
_STATE, _PPID, _SESSION, _START = 0, 1, 3, 19  # fields of /proc/PID/stat after the command name


# ---------------------------------------------------------------- processes, read from /proc


def _processes() -> dict[int, list[str]]:
    """Every live (not zombie) process: pid -> its /proc stat fields after the command name."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text(errors="replace").rpartition(")")[2].split()
        except OSError:  # gone meanwhile
            continue
        if fields[_STATE] not in "ZX":
            found[int(entry)] = fields
    return found


def _tree(root: int) -> dict[int, str]:
    """The live descendants of ``root``: pid -> start time (a reused pid is another process)."""
    procs = _processes()
    found: dict[int, str] = {}
    todo = [root]
    while todo:
        parent = todo.pop()
        for pid, fields in procs.items():
            if int(fields[_PPID]) == parent and pid not in found:
                found[pid] = fields[_START]
                todo.append(pid)
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _survivors(tree: dict[int, str], session: int) -> dict[int, str]:
    """Processes of ``tree`` still running, and any live process of the session: pid -> command."""
    procs = _processes()
    left = [pid for pid, start in tree.items() if pid in procs and procs[pid][_START] == start]
    left += [pid for pid, fields in procs.items() if int(fields[_SESSION]) == session]
    return {pid: _cmdline(pid)[:160] for pid in sorted(set(left))}


# ---------------------------------------------------------------- start, wait, kill


def _start(cmd: list[str], log: Path, env: dict[str, str], cwd: Path | None = None) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


def _wait_until(ready: Callable[[], bool], proc: subprocess.Popen, log: Path, what: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            raise AssertionError(f"the command exited with {proc.returncode} before {what}: {_tail(log)}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout:.0f} s: {_tail(log)}")
        time.sleep(0.2)


def _has_child(proc: subprocess.Popen, *words: str) -> Callable[[], bool]:
    """Ready when a descendant's command line holds all of ``words``."""
    return lambda: any(all(w in _cmdline(pid) for w in words) for pid in _tree(proc.pid))


def _kill_top(proc: subprocess.Popen, signum: int, log: Path) -> float:
    """Send ``signum`` to ``proc`` alone; assert that it and everything it started are gone within
    :data:`STOP_WITHIN_S`; return the seconds that took."""
    tree = _tree(proc.pid)
    assert len(tree) >= 2, f"expected the worker and a server below it: {tree}"
    started = time.monotonic()
    os.kill(proc.pid, signum)
    while True:
        left = _survivors(tree, proc.pid)
        took = time.monotonic() - started
        if (not left and proc.poll() is not None) or took > STOP_WITHIN_S:
            break
        time.sleep(0.1)
    for pid in left:  # leave nothing behind for the next test
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)
    print(f"{signal.Signals(signum).name}: every process gone after {took:.1f} s")
    assert not left, f"alive {took:.1f} s after {signal.Signals(signum).name}: {left}\n{_tail(log)}"
    assert proc.returncode == -signum, _tail(log)  # exits as if the signal had hit a plain process
    return took


# ---------------------------------------------------------------- the three commands


@pytest.mark.parametrize("signum", SIGNALS)
def test_a_signal_to_recraft_ui_stops_the_mlflow_server(tmp_path, signum):
    port = _free_port()
    env = {**os.environ, "RECRAFT_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    log = tmp_path / "ui.log"
    proc = _start([RECRAFT, "ui", "--port", str(port)], log, env)

    def answers() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return True
        except OSError:
            return False

    _wait_until(answers, proc, log, "the MLflow UI answers")
    _kill_top(proc, signum, log)


@pytest.mark.parametrize("signum", SIGNALS)
def test_a_signal_to_recraft_repro_stops_the_prefect_server_dvc_and_its_stages(repo, tmp_path, signum):  # noqa: F811
    path, env = repo
    log = tmp_path / "repro.log"
    proc = _start([RECRAFT, "repro"], log, env, cwd=path)
    # The shared Prefect server is up (dvc starts after it) and dvc runs a stage in its own recraft.
    _wait_until(_has_child(proc, "recraft", "stage"), proc, log, "dvc runs a stage")
    assert any("prefect" in _cmdline(pid) and "server" in _cmdline(pid) for pid in _tree(proc.pid))
    _kill_top(proc, signum, log)


def _run_command(work: Path, task: Path) -> list[str]:
    """The command of :func:`tests.reliability.test_cli_resume._run`, to start without waiting."""
    out = ["--workdir", str(work), "--metrics-out", str(work / "m.json")]
    return [RECRAFT, "run", "--task", f"npz:{task}", *out, *(a for kv in TINY for a in ("--set", kv))]


def test_sigterm_to_recraft_run_stops_its_temporary_prefect_server(shared, tmp_path):  # noqa: F811
    base, env = shared
    env = {k: v for k, v in env.items() if k != "PREFECT_API_URL"}  # each run starts its own server
    log = tmp_path / "run.log"
    proc = _start([RECRAFT, "run", "--task", "dna", "--workdir", str(tmp_path / "work")], log, env, cwd=tmp_path)
    _wait_until(_has_child(proc, "uvicorn", "prefect"), proc, log, "the temporary Prefect server starts")
    _kill_top(proc, signal.SIGTERM, log)


def _stage_runs(db: Path, work: Path) -> dict[str, tuple[str, str]]:
    """The stage runs under ``work``'s pipeline runs in the MLflow store: run id -> (stage, status)."""
    query = """
        SELECT r.run_uuid, s.value, r.status FROM runs r
        JOIN tags s ON s.run_uuid = r.run_uuid AND s.key = 'recraft.stage'
        JOIN tags p ON p.run_uuid = r.run_uuid AND p.key = 'mlflow.parentRunId'
        JOIN tags w ON w.run_uuid = p.value AND w.key = 'recraft.workspace' AND w.value = ?
    """
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return {run: (stage, status) for run, stage, status in conn.execute(query, (str(work.resolve()),))}
    except sqlite3.OperationalError:  # not created yet
        return {}


def test_sigkill_inside_a_stage_then_a_rerun_gives_the_uninterrupted_result(shared, reference, tmp_path):  # noqa: F811
    base, env = shared
    task, db, work = base / "task.npz", base / "mlflow.db", tmp_path / "work"
    log = tmp_path / "run.log"
    own_server = {k: v for k, v in env.items() if k != "PREFECT_API_URL"}
    proc = _start(_run_command(work, task), log, own_server)
    # source runs for seconds: the kill lands inside it, not between two stages.
    _wait_until(lambda: ("source", "RUNNING") in _stage_runs(db, work).values(), proc, log, "the source stage runs")
    _kill_top(proc, signal.SIGKILL, log)
    killed = [run for run, (_, status) in _stage_runs(db, work).items() if status != "FINISHED"]
    assert len(killed) == 1, _stage_runs(db, work)

    rerun = _run(work, task, env)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "already finished" in rerun.stderr, rerun.stderr[-3000:]  # it resumed
    assert _stage_runs(db, work)[killed[0]] == ("source", "KILLED")
    assert _outcome(work) == reference


# ---------------------------------------------------------------- a worker that will not stop

# A supervised app that starts a child and then will not stop: ``{deaf}`` ignores SIGTERM, or
# swallows the KeyboardInterrupt it becomes.
_STUBBORN = """
import signal, subprocess, time
from flows.supervise import supervise

def app():
    subprocess.Popen(["sleep", "300"])
    {deaf}
    while True:
        try:
            time.sleep(1)
        except KeyboardInterrupt:
            pass

supervise(app)
"""


@pytest.mark.parametrize(
    ("deaf", "signum"),
    [
        pytest.param("signal.signal(signal.SIGTERM, signal.SIG_IGN)", signal.SIGTERM, id="ignores-SIGTERM"),
        pytest.param("", signal.SIGKILL, id="swallows-the-interrupt-SIGKILL"),
    ],
)
def test_a_worker_that_will_not_stop_is_killed_in_time(tmp_path, deaf, signum):
    """The backstops: the supervisor SIGKILLs a worker deaf to SIGTERM; a worker whose supervisor
    died and that does not unwind kills its tree and exits on its own."""
    log = tmp_path / "app.log"
    proc = _start([sys.executable, "-c", _STUBBORN.format(deaf=deaf)], log, dict(os.environ))
    _wait_until(_has_child(proc, "sleep", "300"), proc, log, "the app starts its child")
    time.sleep(0.5)  # the app has set itself deaf
    took = _kill_top(proc, signum, log)
    assert took > 3, "the worker stopped at once: the backstop was not exercised"


# ---------------------------------------------------------------- exit codes


def test_the_supervisor_exits_as_its_worker_did(tmp_path):
    direct = {**os.environ, "RECRAFT_NO_SUPERVISE": "1"}
    for args in (["--help"], [], ["run", "--budget", "nope"]):
        supervised = subprocess.run([RECRAFT, *args], capture_output=True, text=True, timeout=120)
        plain = subprocess.run([RECRAFT, *args], capture_output=True, text=True, timeout=120, env=direct)
        assert (supervised.returncode, supervised.stdout, supervised.stderr) == (
            plain.returncode,
            plain.stdout,
            plain.stderr,
        ), args
        assert supervised.returncode == (0 if args == ["--help"] else 2)
    # A worker killed by a signal: the supervisor dies of the same one.
    log = tmp_path / "ui.log"
    env = {**os.environ, "RECRAFT_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    proc = _start([RECRAFT, "ui", "--port", str(_free_port())], log, env, cwd=tmp_path)

    def children() -> list[int]:  # the supervisor's own children: the worker (not the MLflow UI it starts)
        return [pid for pid, fields in _processes().items() if int(fields[_PPID]) == proc.pid]

    # Once the worker has started the MLflow UI, killing it orphans the UI: the supervisor, its
    # subreaper, must stop it too.
    _wait_until(lambda: len(_tree(proc.pid)) >= 2, proc, log, "the worker starts the MLflow UI")
    (worker,) = children()
    os.kill(worker, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL, _tail(log)
    assert not _survivors({}, proc.pid)


def test_the_entry_point_imports_nothing_heavy():
    heavy = "('typer', 'torch', 'prefect', 'mlflow', 'numpy')"
    code = f"import sys, flows.supervise; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
