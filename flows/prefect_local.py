"""One local Prefect server for the length of a command, shared by every stage process.

Without ``PREFECT_API_URL`` each process that runs a flow starts its own temporary server. DVC
runs each stage as a process, so ``dvc repro`` would pay that start-up once per stage;
``recraft repro`` starts one server on 127.0.0.1, runs ``dvc repro`` against it, and stops it.
"""

from __future__ import annotations

import os
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

__all__ = ["local_prefect_server"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def local_prefect_server(log_file: Path, timeout_s: float = 180.0) -> Iterator[str]:
    """Start ``prefect server start`` on a free loopback port; yield its API URL; stop it.

    Raises:
        UserError: the server did not answer its health check within ``timeout_s``.
    """
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    prefect = Path(sys.executable).with_name("prefect")
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                        if resp.status == 200:
                            break
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise UserError(
                        f"the local Prefect server did not start (see {log_file})",
                        hint="or set PREFECT_API_URL to a running server",
                    )
                time.sleep(0.5)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
