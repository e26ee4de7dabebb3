"""Local Prefect servers: one for the length of a command, or one shared by a workspace's stages.

Without ``PREFECT_API_URL`` each process that runs a flow starts its own temporary server (about
10 s on 2 cores). DVC runs each stage as a process, so a plain ``dvc repro`` would pay that
start-up once per stage. Two ways avoid it:

- :func:`local_prefect_server`: ``recraft repro`` starts one server on 127.0.0.1, runs
  ``dvc repro`` against it, and stops it;
- :func:`workspace_prefect_server`: each ``recraft stage`` process (what ``dvc.yaml`` runs) takes
  a lease on the workspace's shared server, starting it if none is running. The server belongs to
  a small keeper process (``python -m flows.prefect_local keep DIR``) that stops it, and exits,
  once no lease holder has been alive for :data:`IDLE_ENV` seconds (default
  :data:`IDLE_DEFAULT_S`). Its state lives in ``.prefect/`` of the workspace: ``server.json``
  (keeper pid, URL), ``leases/PID``, ``server.lock`` (serialises starts and stops) and
  ``server.log``. A crashed or interrupted stage leaves a lease whose pid is dead, which counts
  as released: no server outlives the last stage by more than the idle time.

This module imports only the standard library and :mod:`components.errors`: the keeper starts
in a fraction of a second.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from components.errors import UserError

__all__ = [
    "IDLE_DEFAULT_S",
    "IDLE_ENV",
    "OUTLIVES_COMMAND",
    "SharedServer",
    "is_alive",
    "local_prefect_server",
    "workspace_prefect_server",
]

IDLE_ENV = "RECRAFT_PREFECT_IDLE_S"
IDLE_DEFAULT_S = 30.0
# Set in the keeper's environment: the supervisor of a ``recraft`` command (flows/supervise.py)
# leaves a process that carries it, and its subtree, running when the command ends.
OUTLIVES_COMMAND = "RECRAFT_OUTLIVES_COMMAND"
_POLL_S = 0.5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_command(port: int) -> tuple[list[str], dict[str, str]]:
    prefect = Path(sys.executable).with_name("prefect")
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    return [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)], env


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group, SIGKILL it if still alive after 30 s."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextmanager
def local_prefect_server(log_file: Path, timeout_s: float = 180.0) -> Iterator[str]:
    """Start ``prefect server start`` on a free loopback port; yield its API URL; stop it.

    Raises:
        UserError: the server did not answer its health check within ``timeout_s``.
    """
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    cmd, env = _server_command(port)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            deadline = time.monotonic() + timeout_s
            while not _healthy(url):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise UserError(
                        f"the local Prefect server did not start (see {log_file})",
                        hint="or set PREFECT_API_URL to a running server",
                    )
                time.sleep(0.5)
            yield url
        finally:
            _stop(proc)


# ---------------------------------------------------------------- the workspace's shared server


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def is_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie or a missing /proc entry counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rpartition(b")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


def _state(folder: Path) -> dict | None:
    """``server.json`` when its keeper is alive, else None."""
    try:
        state = json.loads((folder / "server.json").read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) and is_alive(int(state.get("pid", 0))) else None


def _live_leases(folder: Path) -> int:
    """How many lease holders are alive; the leases of dead ones are removed."""
    live = 0
    for lease in (folder / "leases").glob("*"):
        if lease.name.isdigit() and is_alive(int(lease.name)):
            live += 1
        else:
            lease.unlink(missing_ok=True)
    return live


class SharedServer:
    """A lease on a workspace's shared server; :meth:`url` starts the server when none runs."""

    def __init__(self, folder: Path, timeout_s: float) -> None:
        self._folder, self._timeout_s, self._url = folder, timeout_s, ""

    def url(self) -> str:
        """The server's API URL, starting it (through its keeper) if none is running.

        Raises:
            UserError: the server did not answer its health check within the timeout.
        """
        if not self._url:
            with _locked(self._folder / "server.lock"):
                state = _state(self._folder)
                if state is None or not _healthy(state["url"]):
                    state = _start_keeper(self._folder, self._timeout_s, replacing=state)
            self._url = state["url"]
        return self._url


@contextmanager
def workspace_prefect_server(root: Path, timeout_s: float = 180.0) -> Iterator[SharedServer]:
    """A lease on ``root``'s shared local Prefect server for the block.

    Take it first thing: a running server stays up while a lease holder is alive, so the next
    stage of a ``dvc repro`` keeps it through its imports and checks, however long they take.
    """
    folder = root.resolve() / ".prefect"
    (folder / "leases").mkdir(parents=True, exist_ok=True)
    lease = folder / "leases" / str(os.getpid())
    lease.touch()
    try:
        yield SharedServer(folder, timeout_s)
    finally:
        lease.unlink(missing_ok=True)


def _start_keeper(folder: Path, timeout_s: float, replacing: dict | None) -> dict:
    """Start a keeper (under the lock) and wait until its server answers."""
    if replacing is not None:  # alive but not answering: a hung server
        try:
            os.kill(int(replacing["pid"]), signal.SIGTERM)
        except ProcessLookupError:
            pass
    (folder / "server.json").unlink(missing_ok=True)
    log_file = folder / "server.log"
    env = {**os.environ, OUTLIVES_COMMAND: "1", "PYTHONPATH": _import_root()}
    with open(log_file, "ab") as log:
        keeper = subprocess.Popen(
            [sys.executable, "-m", "flows.prefect_local", "keep", str(folder), str(timeout_s)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # Ctrl-C in the terminal reaches the stage, not the shared server
        )
    deadline = time.monotonic() + timeout_s + 5
    while True:
        state = _state(folder)
        if state is not None and state["pid"] == keeper.pid:
            return state
        if keeper.poll() is not None or time.monotonic() > deadline:
            if keeper.poll() is None:
                keeper.kill()
            raise UserError(
                f"the workspace's Prefect server did not start (see {log_file})",
                hint="or set PREFECT_API_URL to a running server",
            )
        time.sleep(0.2)


def _import_root() -> str:
    """``PYTHONPATH`` for the keeper: the folder that holds this package, then the caller's."""
    here = str(Path(__file__).resolve().parents[1])
    rest = os.environ.get("PYTHONPATH")
    return f"{here}{os.pathsep}{rest}" if rest else here


def _keep(folder: Path, timeout_s: float) -> int:
    """The keeper: run the server, publish it, stop it once idle (or once the workspace is gone)."""
    idle_s = float(os.environ.get(IDLE_ENV) or IDLE_DEFAULT_S)
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    cmd, env = _server_command(port)
    env.pop(OUTLIVES_COMMAND, None)
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    signal.signal(signal.SIGTERM, lambda *_: (_stop(proc), os._exit(0)))
    deadline = time.monotonic() + timeout_s
    while not _healthy(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop(proc)
            return 1
        time.sleep(0.5)
    tmp = folder / f"server.json.{os.getpid()}"
    tmp.write_text(json.dumps({"pid": os.getpid(), "url": url, "started": time.time()}))
    tmp.replace(folder / "server.json")
    busy_at = time.monotonic()
    try:
        while proc.poll() is None and folder.is_dir():
            if _live_leases(folder):
                busy_at = time.monotonic()
            elif time.monotonic() - busy_at > idle_s:
                # Under the lock no caller is inside SharedServer.url() reading server.json; a lease
                # taken just after the check finds no server.json and starts a fresh keeper.
                with _locked(folder / "server.lock"):
                    if not _live_leases(folder):
                        (folder / "server.json").unlink(missing_ok=True)
                        break
                busy_at = time.monotonic()
            time.sleep(_POLL_S)
    except FileNotFoundError:  # the workspace was deleted under us
        pass
    finally:
        if proc.poll() is None:
            _stop(proc)
    return 0


if __name__ == "__main__":  # python -m flows.prefect_local keep FOLDER TIMEOUT_S
    if len(sys.argv) != 4 or sys.argv[1] != "keep":
        sys.exit("usage: python -m flows.prefect_local keep FOLDER TIMEOUT_S")
    sys.exit(_keep(Path(sys.argv[2]), float(sys.argv[3])))
