"""``recraft``'s entry point: a command's whole process tree ends with the command.

A ``recraft`` command starts servers and tools as child processes: Prefect's temporary API
server (a uvicorn process), ``dvc repro`` and the ``recraft stage`` processes it runs, the MLflow
UI and its workers. Killed from outside, a Python process stops none of them: they would run on,
re-parented to init. So on Linux the console script forks first:

- the **supervisor** (the parent, the pid the caller sees) becomes a *child subreaper*
  (``prctl(PR_SET_CHILD_SUBREAPER)``): every orphaned descendant is re-parented to it, not to
  init. It forwards SIGTERM and SIGHUP to the worker (and SIGKILLs a worker that is still alive
  :data:`_DEADLINE_S` later), ignores SIGINT (a terminal's Ctrl-C reaches the worker directly),
  waits for the worker, stops whatever descendants are left, and exits as the worker did: the
  same code, or killed by the same signal (by the forwarded one, unless the worker exited 0);
- the **worker** (the child) runs :data:`flows.cli.app`. SIGTERM or SIGHUP -- also sent by the
  kernel when the supervisor dies, SIGKILL included (``PR_SET_PDEATHSIG``) -- unwinds it like
  Ctrl-C, so context managers close Prefect's server and end MLflow runs; whatever is still
  alive after a grace period is killed. On its way out it stops its remaining descendants.

Either way no descendant outlives the command by more than :data:`STOP_WITHIN_S` seconds, save one
kind: a process started with ``OUTLIVES_COMMAND=1`` (flows/prefect_local.py) in its environment (the keeper of a
workspace's shared Prefect server, flows/prefect_local.py, which stops itself when idle) is left
running, with its subtree.
``RECRAFT_NO_SUPERVISE=1``, or an OS without these calls, runs the app in this process instead.

This module runs before everything else: it imports only the standard library's small modules.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

__all__ = ["NO_SUPERVISE", "STOP_WITHIN_S", "descendants", "main", "stop_descendants", "supervise"]

NO_SUPERVISE = "RECRAFT_NO_SUPERVISE"
STOP_WITHIN_S = 10.0
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
# After a termination signal: the worker unwinds for _UNWIND_S, then kills its tree (SIGTERM,
# _LAST_GRACE_S, SIGKILL) and exits. A worker still alive _DEADLINE_S after the supervisor
# forwarded the signal is SIGKILLed, and the tree stopped with _KILL_GRACE_S: under STOP_WITHIN_S.
_UNWIND_S = 4.0
_LAST_GRACE_S = 1.0
_DEADLINE_S = 6.0
_KILL_GRACE_S = 2.0
_TERMINATING = (signal.SIGTERM, signal.SIGHUP)


def main() -> None:
    """The ``recraft`` console script: :data:`flows.cli.app` in a supervised worker."""
    supervise(_run_cli)


def _run_cli() -> None:
    from flows.cli import app  # after the fork: torch, prefect and mlflow load in the worker only

    app()


def supervise(app: Callable[[], object]) -> None:
    """Run ``app`` in a forked worker and exit as it did, leaving none of its descendants.

    ``app`` runs in this process instead with ``RECRAFT_NO_SUPERVISE=1`` or off Linux.
    """
    if os.environ.get(NO_SUPERVISE, "") not in ("", "0") or not _set_subreaper():
        app()
        return
    supervisor = os.getpid()
    worker = os.fork()
    if worker == 0:
        _work(supervisor, app)
    else:
        _supervise(worker)


# ---------------------------------------------------------------- the process tree


def _stat(pid: str) -> tuple[int, str] | None:
    """``(ppid, state)`` of a process from ``/proc/PID/stat``, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode(errors="replace")
    except OSError:
        return None
    fields = text.rpartition(")")[2].split()  # the command name may hold spaces and parentheses
    return int(fields[1]), fields[0]


def _outlives(pid: int) -> bool:
    """Whether ``pid`` was started with ``OUTLIVES_COMMAND=1`` in its environment."""
    from flows.prefect_local import OUTLIVES_COMMAND  # imported when stopping, never at start-up

    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f"{OUTLIVES_COMMAND}=1".encode() in f.read().split(b"\0")
    except OSError:
        return False


def descendants(root: int | None = None) -> list[int]:
    """Live (not zombie) descendants of ``root`` (default: this process), parents first; a process
    started with ``OUTLIVES_COMMAND=1`` and its subtree are not counted."""
    children: dict[int, list[int]] = {}
    live: set[int] = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (info := _stat(entry)) is not None:
            children.setdefault(info[0], []).append(int(entry))
            if info[1] not in "ZX":
                live.add(int(entry))
    found, todo = [], [os.getpid() if root is None else root]
    while todo:
        for child in children.get(todo.pop(), ()):
            if _outlives(child):
                continue
            found.append(child)
            todo.append(child)
    return [pid for pid in found if pid in live]


def _reap() -> None:
    """Collect every exited child: re-parented orphans become this process's zombies."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _signal(pids: list[int], signum: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def stop_descendants(grace_s: float) -> None:
    """SIGTERM every descendant of this process, SIGKILL those alive after ``grace_s``, reap them.

    Descendants that appear meanwhile (a server forking on its way down) are signalled too.
    """
    signalled: set[int] = set()
    deadline = time.monotonic() + grace_s
    while (alive := descendants()) and time.monotonic() < deadline:
        _signal([pid for pid in alive if pid not in signalled], signal.SIGTERM)
        signalled.update(alive)
        time.sleep(0.05)
        _reap()
    give_up = time.monotonic() + 2.0  # a process in uninterruptible sleep dies when it wakes
    while (alive := descendants()) and time.monotonic() < give_up:
        _signal(alive, signal.SIGKILL)
        time.sleep(0.02)
        _reap()
    _reap()


# ---------------------------------------------------------------- the two processes


def _prctl(option: int, value: int) -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(ctypes.c_int(option), ctypes.c_ulong(value), 0, 0, 0) == 0


def _set_subreaper() -> bool:
    """Make this process its descendants' subreaper; False where the OS cannot (not Linux)."""
    return sys.platform.startswith("linux") and _prctl(_PR_SET_CHILD_SUBREAPER, 1)


def _supervise(worker: int) -> None:
    """Wait for the worker, forwarding termination signals; stop the rest; exit as it did."""
    forwarded: list[int] = []

    def forward(signum: int, _frame) -> None:  # noqa: ANN001
        if not forwarded:  # a worker deaf to it is killed at the deadline
            signal.setitimer(signal.ITIMER_REAL, _DEADLINE_S)
        forwarded.append(signum)
        _signal([worker], signum)  # still ours: it is not reaped before waitpid returns

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the worker, in the same group
    signal.signal(signal.SIGALRM, lambda *_: _signal([worker], signal.SIGKILL))
    for signum in _TERMINATING:
        signal.signal(signum, forward)
    _, status = os.waitpid(worker, 0)
    for signum in (*_TERMINATING, signal.SIGALRM):  # the worker is reaped: its pid may be reused
        signal.signal(signum, signal.SIG_IGN)
    signal.setitimer(signal.ITIMER_REAL, 0)
    stop_descendants(_KILL_GRACE_S)
    code = os.waitstatus_to_exitcode(status)
    # Told to stop and stopped short of success (by the signal, by its exit code 128+N after the
    # worker's last resort, or killed at the deadline): die of that signal, as a plain process would.
    _exit_as(-forwarded[0] if forwarded and code != 0 else code)


def _exit_as(code: int) -> None:
    """Exit with ``code``; a negative one (killed by signal N) by dying of the same signal."""
    if code >= 0:
        sys.exit(code)
    sys.stdout.flush()
    sys.stderr.flush()
    if -code not in (signal.SIGKILL, signal.SIGSTOP):  # these two cannot be handled at all
        signal.signal(-code, signal.SIG_DFL)
    os.kill(os.getpid(), -code)
    os._exit(128 - code)  # a signal whose default action is not to terminate


def _work(supervisor: int, app: Callable[[], object]) -> None:
    """The forked worker: die with the supervisor, unwind on SIGTERM, leave no descendant."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != supervisor:  # it died before the line above took effect
        os._exit(128 + signal.SIGTERM)
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)  # orphans of its own subtree stay in reach
    me = os.getpid()
    received: list[int] = []
    leaving: list[bool] = []

    def terminate(signum: int, _frame) -> None:  # noqa: ANN001
        if os.getpid() != me:  # a process forked by the app inherited this handler: die plainly
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        if received:
            return
        received.append(signum)
        threading.Thread(target=_last_resort, args=(signum,), daemon=True).start()
        if not leaving:  # unwind like Ctrl-C: context managers stop servers and end runs
            raise KeyboardInterrupt

    def leave() -> None:  # registered first, so it runs after the atexit hooks of prefect & co
        if os.getpid() != me:  # a process forked by the app, exiting
            return
        leaving.append(True)
        stop_descendants(_KILL_GRACE_S)
        if received:
            _exit_as(-received[0])

    atexit.register(leave)
    for signum in _TERMINATING:
        signal.signal(signum, terminate)
    try:
        app()
    except KeyboardInterrupt:
        if not received:  # a Ctrl-C the app let through: as Python would
            raise
        sys.exit(128 + received[0])  # leave() then dies of the signal itself
    sys.exit(0)  # never back into the caller's code: that is the supervisor's


def _last_resort(signum: int) -> None:
    """A worker that has not unwound in time: kill its tree and exit."""
    time.sleep(_UNWIND_S)
    stop_descendants(_LAST_GRACE_S)
    os._exit(128 + signum)
