"""The S3 wheel mirror against a real S3 API (moto's server in a thread), with injected faults.

moto only checks credentials once told to (``POST /moto-api/reset-auth`` with the number of
requests to let through first: 0 means check every request), and then only knows access keys that
were created through its IAM API. The credential tests create IAM users, switch checking on for
the test and off again afterwards.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import boto3
import pytest

from components.errors import AssetError, UserError
from components.wheels import sha256_file
from flows.storage import WheelMirror, parse_s3_url, s3_client
from tests.integration.conftest import S3Endpoint, free_port, moto_s3

pytestmark = pytest.mark.integration

BUCKET = "wheels"
_free_port = free_port  # other test modules import it from here


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory) -> Iterator[str]:
    """moto's S3 on 127.0.0.1 with a bucket ``wheels``; fake credentials for this module only.

    Built on the shared :func:`moto_s3` rather than the ``s3_endpoint`` fixture because modules
    outside ``tests/integration`` import this fixture, and they cannot see that conftest.
    """
    with moto_s3(tmp_path_factory.mktemp("aws")) as s3:
        s3.create_bucket(BUCKET)
        yield s3.url


@pytest.fixture
def mirror_url(request) -> str:
    """A prefix of its own for each test, so tests do not see each other's wheels."""
    return f"s3://{BUCKET}/{request.node.name.replace('[', '-').rstrip(']')}"


def _wheel(tmp_path, data: bytes = b"PK\x03\x04 not really a wheel " * 1000, name: str = "demo-1.0-py3-none-any.whl"):
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    path = src / name
    path.write_bytes(data)
    return path


def test_push_then_fetch_round_trip(endpoint, mirror_url, tmp_path):
    wheel = _wheel(tmp_path)
    mirror = WheelMirror(mirror_url, s3_client(endpoint))
    key = mirror.push(wheel)
    assert key == f"{parse_s3_url(mirror_url)[1]}/{wheel.name}"
    assert mirror.list() == {wheel.name: wheel.stat().st_size}
    got = mirror.fetch(wheel.name, sha256_file(wheel), tmp_path / "cache")
    assert got == tmp_path / "cache" / wheel.name
    assert sha256_file(got) == sha256_file(wheel)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [wheel.name]


def test_fetch_of_missing_object_returns_none(endpoint, mirror_url, tmp_path):
    mirror = WheelMirror(mirror_url, s3_client(endpoint))
    assert mirror.fetch("absent-1.0-py3-none-any.whl", "0" * 64, tmp_path) is None
    assert list(tmp_path.iterdir()) == []


def test_push_twice_uploads_once(endpoint, mirror_url, tmp_path):
    client = s3_client(endpoint)
    puts = []
    client.meta.events.register("before-call.s3.PutObject", lambda **kwargs: puts.append(1))
    mirror = WheelMirror(mirror_url, client)
    wheel = _wheel(tmp_path)
    assert mirror.push(wheel) == mirror.push(wheel)
    assert len(puts) == 1
    wheel.write_bytes(b"a rebuilt wheel")  # same name, new content: uploaded again
    mirror.push(wheel)
    assert len(puts) == 2
    assert mirror.list() == {wheel.name: len(b"a rebuilt wheel")}


def test_checksum_mismatch_raises_and_leaves_nothing(endpoint, mirror_url, tmp_path):
    mirror = WheelMirror(mirror_url, s3_client(endpoint))
    wheel = _wheel(tmp_path, b"the bytes on the mirror")
    key = mirror.push(wheel)
    pinned = "ab" * 32
    with pytest.raises(AssetError) as info:
        mirror.fetch(wheel.name, pinned, tmp_path / "cache")
    message = str(info.value)
    assert f"s3://{BUCKET}/{key}" in message and pinned in message and sha256_file(wheel) in message
    assert list((tmp_path / "cache").iterdir()) == []


def test_missing_bucket_is_a_user_error_naming_it(endpoint, tmp_path):
    mirror = WheelMirror("s3://no-such-bucket/wheels", s3_client(endpoint))
    for call in (
        lambda: mirror.fetch("demo-1.0-py3-none-any.whl", "0" * 64, tmp_path),
        lambda: mirror.push(_wheel(tmp_path)),
        mirror.list,
    ):
        with pytest.raises(UserError, match="'no-such-bucket' does not exist") as info:
            call()
        assert endpoint in str(info.value) and "RECRAFT_S3_ENDPOINT_URL" in info.value.hint
    assert [p.name for p in tmp_path.iterdir()] == ["src"]


def test_unreachable_endpoint_fails_fast_naming_it(tmp_path):
    dead = f"http://127.0.0.1:{_free_port()}"  # bound and released: nothing listens there
    client = s3_client(dead, max_attempts=1, connect_timeout=1, read_timeout=1)
    start = time.monotonic()
    with pytest.raises(UserError, match="cannot reach the S3 endpoint") as info:
        WheelMirror(f"s3://{BUCKET}", client).list()
    assert time.monotonic() - start < 5
    assert dead in str(info.value) and "RECRAFT_S3_ENDPOINT_URL" in info.value.hint


@pytest.mark.parametrize("bad", ["wheels", "https://wheels/x", "s3://", "s3:///prefix", "s3://a b/c"])
def test_bad_urls_are_rejected_naming_the_value(bad):
    with pytest.raises(UserError, match="not an S3 URL") as info:
        parse_s3_url(bad)
    assert repr(bad) in str(info.value)


# --- credentials: moto checks them only while IAM authentication is switched on -------------------


@pytest.fixture(scope="module")
def iam_keys(endpoint) -> dict[str, tuple[str, str]]:
    """Access keys (id, secret) of an IAM user allowed ``s3:*`` and of one with no policy at all."""
    iam = boto3.session.Session().client("iam", endpoint_url=endpoint)
    keys = {}
    for user, policy in (("mirror", {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}), ("nobody", None)):
        iam.create_user(UserName=user)
        if policy:
            document = json.dumps({"Version": "2012-10-17", "Statement": [policy]})
            iam.put_user_policy(UserName=user, PolicyName="s3", PolicyDocument=document)
        key = iam.create_access_key(UserName=user)["AccessKey"]
        keys[user] = (key["AccessKeyId"], key["SecretAccessKey"])
    return keys


def _moto_checks_credentials(endpoint: str) -> AbstractContextManager[None]:
    """moto checks credentials inside the block only (:meth:`S3Endpoint.checking_credentials`)."""
    return S3Endpoint(endpoint).checking_credentials()


@pytest.mark.parametrize(
    "who, code",
    [("unknown key", "InvalidAccessKeyId"), ("wrong secret", "SignatureDoesNotMatch"), ("no policy", "AccessDenied")],
)
def test_rejected_credentials_are_a_user_error(endpoint, iam_keys, mirror_url, tmp_path, monkeypatch, who, code):
    key_id, secret = {
        "unknown key": ("AKIAUNKNOWNKEY000000", "whatever"),
        "wrong secret": (iam_keys["mirror"][0], "not-the-secret"),
        "no policy": iam_keys["nobody"],
    }[who]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    mirror = WheelMirror(mirror_url, s3_client(endpoint))
    with _moto_checks_credentials(endpoint):
        with pytest.raises(UserError, match=code) as info:
            mirror.fetch("demo-1.0-py3-none-any.whl", "0" * 64, tmp_path)
        assert endpoint in str(info.value) and "AWS_ACCESS_KEY_ID" in info.value.hint
        assert secret not in str(info.value) + info.value.hint
        with pytest.raises(UserError, match=code):
            mirror.list()
        # push starts with a HEAD, whose error response has no body: only the status (403) is known.
        with pytest.raises(UserError, match="403"):
            mirror.push(_wheel(tmp_path))


# --- fault injection: a reverse proxy that answers the first N requests with 503 SlowDown ----------

_SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message><RequestId>injected</RequestId></Error>"
)
# Hop-by-hop headers stay between client and proxy; Host is forwarded untouched (SigV4 signs it).
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "expect",
}


class _FaultyProxy(ThreadingHTTPServer):
    """Forwards every request to ``upstream`` except the first ``failures``, which get a 503."""

    daemon_threads = True

    def __init__(self, upstream: str, failures: int) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.upstream = urlsplit(upstream).netloc
        self.failures = failures
        self.requests: list[tuple[str, int]] = []  # (method, status sent back)
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def fail_next(self) -> bool:
        with self._lock:
            fail = self.failures > 0
            self.failures -= fail
            return fail


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, and "Expect: 100-continue" is answered here

    def log_message(self, *args) -> None:  # quiet: one line per request on stderr otherwise
        pass

    def _relay(self) -> None:
        assert "chunked" not in self.headers.get("Transfer-Encoding", ""), "proxy handles Content-Length only"
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.server.fail_next():
            status, headers, data = 503, [("Content-Type", "application/xml")], _SLOW_DOWN
        else:
            upstream = http.client.HTTPConnection(self.server.upstream, timeout=10)
            forward = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            upstream.request(self.command, self.path, body=body, headers=forward)
            response = upstream.getresponse()
            status, data = response.status, response.read()
            headers = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP]
            upstream.close()
        self.server.requests.append((self.command, status))
        self.send_response(status)
        for name, value in headers:
            if self.command == "HEAD" or name.lower() != "content-length":  # HEAD keeps the object's size
                self.send_header(name, value)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _relay


@contextmanager
def _proxy(endpoint: str, failures: int) -> Iterator[_FaultyProxy]:
    server = _FaultyProxy(endpoint, failures)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_retries_ride_out_503s(endpoint, mirror_url, tmp_path):
    wheel = _wheel(tmp_path, bytes(range(256)) * 4096)  # 1 MiB
    with _proxy(endpoint, failures=2) as proxy:
        mirror = WheelMirror(mirror_url, s3_client(proxy.url))
        mirror.push(wheel)
        assert proxy.requests == [("HEAD", 503), ("HEAD", 503), ("HEAD", 404), ("PUT", 200)]
        proxy.failures = 2
        got = mirror.fetch(wheel.name, sha256_file(wheel), tmp_path / "cache")
        assert proxy.requests[4:] == [("GET", 503), ("GET", 503), ("GET", 200)]
    assert sha256_file(got) == sha256_file(wheel)


def test_503_without_retries_is_a_clear_error(endpoint, mirror_url, tmp_path):
    with _proxy(endpoint, failures=2) as proxy:
        mirror = WheelMirror(mirror_url, s3_client(proxy.url, max_attempts=1))
        with pytest.raises(UserError, match=r"kept failing GetObject .* \(SlowDown\) after 1 attempt") as info:
            mirror.fetch("demo-1.0-py3-none-any.whl", "0" * 64, tmp_path)
        assert proxy.url in str(info.value) and "max_attempts" in info.value.hint
        with pytest.raises(UserError, match=r"kept failing HeadObject .* \(503\) after 1 attempt"):
            mirror.push(_wheel(tmp_path))
    assert [p.name for p in tmp_path.iterdir()] == ["src"]


def test_signatures_survive_the_proxy(endpoint, iam_keys, mirror_url, tmp_path, monkeypatch):
    """With moto checking SigV4, retried requests through the proxy still validate (Host kept)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", iam_keys["mirror"][0])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", iam_keys["mirror"][1])
    wheel = _wheel(tmp_path)
    with _proxy(endpoint, failures=1) as proxy, _moto_checks_credentials(endpoint):
        mirror = WheelMirror(mirror_url, s3_client(proxy.url))
        mirror.push(wheel)
        got = mirror.fetch(wheel.name, sha256_file(wheel), tmp_path / "cache")
        assert ("HEAD", 503) in proxy.requests and ("PUT", 200) in proxy.requests
    assert sha256_file(got) == sha256_file(wheel)
