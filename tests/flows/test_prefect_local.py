"""The workspace's shared Prefect server: started once, reused while leased, stopped when idle."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request

from flows.prefect_local import IDLE_ENV, is_alive, workspace_prefect_server
from flows.supervise import descendants


def _wait_gone(pids: list[int], within_s: float) -> list[int]:
    deadline = time.monotonic() + within_s
    while (alive := [p for p in pids if is_alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    return alive


def test_callers_share_one_server_which_stops_once_no_lease_holder_is_alive(tmp_path, monkeypatch):
    monkeypatch.setenv(IDLE_ENV, "2")
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect_home"))
    folder = tmp_path / ".prefect"
    with workspace_prefect_server(tmp_path) as lease:
        url = lease.url()
        keeper = json.loads((folder / "server.json").read_text())["pid"]
        server = descendants(keeper)  # the prefect server process and its workers
        assert server, "the keeper runs the server as its child"
        with urllib.request.urlopen(f"{url}/health", timeout=5) as resp:
            assert resp.status == 200
        assert (folder / "leases" / str(os.getpid())).exists()
        # A second caller while the first holds its lease gets the same server, not a new one.
        other = subprocess.run(
            [
                sys.executable,
                "-c",
                "from pathlib import Path; from flows.prefect_local import workspace_prefect_server as w\n"
                f"with w(Path({str(tmp_path)!r})) as lease: print(lease.url())",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env=os.environ,
        )
        assert other.returncode == 0, other.stderr
        assert other.stdout.strip() == url
        time.sleep(3)  # past the idle time: our lease keeps the server up
        assert is_alive(keeper)
    # The lease of a caller that died without releasing it (a killed stage) does not count.
    (folder / "leases" / "999999999").touch()
    assert not _wait_gone([keeper, *server], within_s=2 + 15), "the server outlived its idle time"
    assert not (folder / "server.json").exists()
    assert not list((folder / "leases").iterdir())
