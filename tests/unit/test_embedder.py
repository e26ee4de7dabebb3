"""The sequence embedder's token count and patching."""

import pytest
import torch

from components.model import SequenceEmbedder, patch_size


@pytest.mark.parametrize(("length", "max_tokens", "stride"), [(200, 25, 8), (200, 10, 20), (7, 25, 1), (201, 25, 9)])
def test_patch_size_respects_max_tokens(length, max_tokens, stride):
    assert patch_size(length, max_tokens) == stride
    assert -(-length // stride) <= max_tokens


@pytest.mark.parametrize("overlap", [1, 2, 3])
def test_embedder_output_shape_and_position_init(overlap):
    pos = torch.randn(64, 16)
    emb = SequenceEmbedder(4, 200, 16, 10, pos, overlap=overlap)
    out = emb(torch.randn(3, 4, 200))
    assert out.shape == (3, 10, 16)
    assert torch.equal(emb.pos.data, pos[:10])


def test_patches_are_local_without_overlap():
    emb = SequenceEmbedder(1, 40, 8, 4, torch.zeros(8, 8), overlap=1)
    x = torch.zeros(1, 1, 40)
    y = x.clone()
    y[0, 0, 35] = 5.0  # only the last patch (positions 30..39) sees this change
    diff = (emb(x) - emb(y)).abs().sum(-1)[0]
    assert diff[:3].max() == 0 and diff[3] > 0
