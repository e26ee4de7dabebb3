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


def test_differences_of_a_quadratic_and_their_spreads():
    from components.model import difference_stds, differences

    steps = torch.arange(12, dtype=torch.float32)
    x = torch.stack([steps**2, 3 * steps]).unsqueeze(0)  # (1, 2, 12): a quadratic and a ramp
    d = differences(x, 2)
    assert d.shape == (1, 6, 12)
    assert torch.equal(d[0, :2], x[0])
    assert torch.allclose(d[0, 2, 1:-1], 2 * steps[1:-1]) and torch.allclose(d[0, 3], torch.full((12,), 3.0))
    assert torch.allclose(d[0, 5], torch.zeros(12))  # the ramp's second difference
    assert torch.allclose(d[0, 4, 2:-2], torch.full((8,), 2.0))  # the quadratic's, away from the ends
    stds = difference_stds(torch.randn(50, 1, 100))
    assert len(stds) == 3 and stds[1] < stds[0]  # centred differences of white noise: ~0.71 x


def test_an_embedder_with_differences_reads_the_shape_of_the_input():
    from dataclasses import replace

    from components.model import build_embedder
    from components.spec import EmbedderSpec

    cfg = EmbedderSpec(input_shape=(1, 100), d=16, max_tokens=10, overlap=2, motif_kernel=9, init="fresh")
    plain = build_embedder(cfg)
    spectral = build_embedder(replace(cfg, derivatives=2, difference_scales=(1.0, 0.1, 0.01)))
    assert spectral.proj.in_channels == 3 and plain.proj.in_channels == 1
    assert spectral.input_shape == plain.input_shape == (1, 100)  # the model's input is unchanged
    x = torch.randn(4, 1, 100)
    assert spectral(x).shape == plain(x).shape == (4, 10, 16)
    # A saved embedder rebuilt from its config gives the same tokens (the scales live in the config).
    again = build_embedder(replace(cfg, derivatives=2, difference_scales=(1.0, 0.1, 0.01)))
    again.load_state_dict(spectral.state_dict())
    assert torch.equal(again(x), spectral(x))
    with pytest.raises(ValueError, match="needs 3 difference scales"):
        build_embedder(replace(cfg, derivatives=2, difference_scales=(1.0,)))
