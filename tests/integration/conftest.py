"""Real servers for the integration tests: S3 (moto, in a thread) and PostgreSQL (Debian's server).

Both listen on 127.0.0.1 only, on free ports, and are stopped (and their files removed) after the
module or session, also when a test fails. Nothing here mocks boto3 or psycopg2: clients talk to
the servers over TCP, as they would to a team's shared stack.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["free_port", "S3Endpoint", "moto_s3", "PostgresServer"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- S3

_FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
# Anything that could point boto3 (or DVC's aiobotocore, or MLflow) at a real account or endpoint.
_CLEARED_AWS = (
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "RECRAFT_S3_ENDPOINT_URL",
    "RECRAFT_ASSET_MIRROR",
    "MLFLOW_S3_ENDPOINT_URL",
)


@dataclass(frozen=True)
class S3Endpoint:
    """moto's S3 API at ``url`` (``http://127.0.0.1:PORT``); its state lives in this process."""

    url: str

    def client(self, max_attempts: int = 5):
        """A project S3 client (:func:`flows.storage.s3_client`) for this endpoint."""
        from flows.storage import s3_client

        return s3_client(self.url, max_attempts=max_attempts)

    def create_bucket(self, name: str) -> str:
        """Create bucket ``name``; returns ``s3://name``."""
        self.client().create_bucket(Bucket=name)
        return f"s3://{name}"

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every object key in ``bucket`` under ``prefix``, sorted."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))

    @contextmanager
    def checking_credentials(self) -> Iterator[None]:
        """moto checks credentials only inside this block (and then knows only keys made through its
        IAM API): ``POST /moto-api/reset-auth`` with the number of requests to let through first."""

        def reset_auth(count: str) -> str:
            # text/plain: with urllib's default form content type, moto would find no body to read.
            request = urllib.request.Request(
                f"{self.url}/moto-api/reset-auth", count.encode(), headers={"Content-Type": "text/plain"}
            )
            with urllib.request.urlopen(request, timeout=5) as response:
                return json.load(response)["PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT"]

        previous = reset_auth("0")
        try:
            yield
        finally:
            reset_auth(previous)

    def reset(self) -> None:
        """Forget every bucket, object and IAM user (moto keeps them per process, not per server)."""
        request = urllib.request.Request(f"{self.url}/moto-api/reset", b"", method="POST")
        with urllib.request.urlopen(request, timeout=5):
            pass


@contextmanager
def moto_s3(scratch: Path) -> Iterator[S3Endpoint]:
    """moto's S3 on a free 127.0.0.1 port, with fake AWS credentials set (and every other AWS or
    endpoint setting, config files included, removed) while it runs; ``scratch`` is an empty folder.

    A plain context manager, so test modules outside this folder can build fixtures on it.
    Subprocesses (``dvc``) inherit the same environment. The server starts empty and is reset and
    stopped afterwards.
    """
    from moto.server import ThreadedMotoServer

    with pytest.MonkeyPatch.context() as mp:
        for name, value in _FAKE_AWS.items():
            mp.setenv(name, value)
        for name in _CLEARED_AWS:
            mp.delenv(name, raising=False)
        mp.setenv("AWS_CONFIG_FILE", str(scratch / "absent"))
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(scratch / "absent"))
        mp.setenv("NO_PROXY", ",".join(filter(None, [os.environ.get("NO_PROXY"), "127.0.0.1", "localhost"])))
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)  # default: 0.0.0.0
        server.start()
        host, port = server.get_host_and_port()
        endpoint = S3Endpoint(f"http://{host}:{port}")
        try:
            endpoint.reset()  # an earlier module's buckets would still be here
            yield endpoint
        finally:
            try:
                endpoint.reset()
            finally:
                server.stop()


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory) -> Iterator[S3Endpoint]:
    """:func:`moto_s3` for one test module."""
    with moto_s3(tmp_path_factory.mktemp("aws")) as endpoint:
        yield endpoint


# ---------------------------------------------------------------- PostgreSQL

_PG_INSTALL_HINT = "install the server (Debian: apt-get install postgresql) or put its bin/ folder on PATH"


def _pg_bindir() -> Path:
    """The newest ``/usr/lib/postgresql/<version>/bin`` with the server programs, else ``pg_ctl`` on PATH."""
    found = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")]
    found.sort(key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    on_path = shutil.which("pg_ctl")
    bindir = found[-1] if found else Path(on_path).parent if on_path else None
    missing = [n for n in ("initdb", "pg_ctl", "postgres") if bindir is None or not (bindir / n).is_file()]
    if missing:
        pytest.fail(f"PostgreSQL server programs not found ({', '.join(missing)}): {_PG_INSTALL_HINT}", pytrace=False)
    return bindir


@dataclass(frozen=True)
class PostgresServer:
    """A throw-away PostgreSQL server: superuser ``postgres``, trust authentication, 127.0.0.1 only."""

    port: int
    user: str = "postgres"
    host: str = "127.0.0.1"

    def url(self, database: str) -> str:
        """SQLAlchemy URL of ``database`` (SQLAlchemy 2 wants the driver named: ``+psycopg2``)."""
        return f"postgresql+psycopg2://{self.user}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create database ``name``; returns its SQLAlchemy URL."""
        import psycopg2
        from psycopg2 import sql

        conn = psycopg2.connect(host=self.host, port=self.port, user=self.user, dbname="postgres", connect_timeout=10)
        try:
            conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
            with conn.cursor() as cur:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        finally:
            conn.close()
        return self.url(name)


def _as_postgres(cmd: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    """Run a server program: as user ``postgres`` when we are root (it refuses to run as root)."""
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no server log)"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the test session, in a temporary folder owned by ``postgres``.

    The unix socket goes inside that folder, TCP listens on 127.0.0.1 only. Durability is off
    (``fsync``, full-page writes): the data is thrown away. The server is stopped with
    ``pg_ctl stop -m fast`` and the folder removed afterwards, also when a test or the start fails.
    Missing server programs fail the requesting tests (never skip them).
    """
    bindir = _pg_bindir()
    # Not under pytest's tmp_path: its parents are mode 0700 and root's, unreadable to postgres.
    root = Path(tempfile.mkdtemp(prefix="recraft-pg-"))
    data, log = root / "data", root / "server.log"
    started = False
    try:
        if os.geteuid() == 0:
            try:
                shutil.chown(root, "postgres", "postgres")
            except LookupError:
                pytest.fail(f"running as root but there is no user 'postgres': {_PG_INSTALL_HINT}", pytrace=False)
        init = _as_postgres(
            [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale"]
            + ["--no-sync"],
            root,
            timeout=120,
        )
        if init.returncode:
            pytest.fail(f"initdb failed ({init.returncode}):\n{init.stdout}\n{init.stderr}", pytrace=False)
        port = free_port()
        options = (
            f"-c listen_addresses=127.0.0.1 -p {port} -k {root} "
            "-c fsync=off -c full_page_writes=off -c synchronous_commit=off"
        )
        start = _as_postgres(
            [str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start"],
            root,
            timeout=90,
        )
        started = True  # a failed start may still have left a postmaster behind: stop it below
        if start.returncode:
            pytest.fail(f"pg_ctl start failed ({start.returncode}):\n{start.stderr}\n{_log_tail(log)}", pytrace=False)
        yield PostgresServer(port)
    finally:
        try:
            if started:
                _as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], root, timeout=60)
        finally:
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """SQLAlchemy URL of an empty database ``recraft`` on the session's PostgreSQL server."""
    return postgres_server.create_database("recraft")
