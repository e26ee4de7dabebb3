"""FLD against hand-computed entropies, and the Lipschitz hinge."""

import math

import pytest
import torch

from components.distortion import entropy, feature_label_distortion, lipschitz_hinge


def test_fld_matches_hand_computed_entropy():
    # Class 0: two samples whose average prediction is (0.5, 0.5) -> H = ln 2.
    # Class 1: one sample predicting (1, 0) -> H = 0. Priors 2/3 and 1/3.
    probs = torch.tensor([[0.9, 0.1], [0.1, 0.9], [1.0, 0.0]])
    labels = torch.tensor([0, 0, 1])
    expected = (2 / 3) * math.log(2)
    assert feature_label_distortion(probs, labels, "ce").item() == pytest.approx(expected, abs=1e-6)


def test_fld_mi_subtracts_marginal_entropy():
    probs = torch.tensor([[0.9, 0.1], [0.1, 0.9], [1.0, 0.0]])
    labels = torch.tensor([0, 0, 1])
    marginal = torch.tensor([2.0 / 3, 1.0 / 3])
    expected = (2 / 3) * math.log(2) - entropy(marginal).item()
    assert feature_label_distortion(probs, labels, "mi").item() == pytest.approx(expected, abs=1e-6)


def test_fld_is_zero_when_each_class_maps_to_one_source_class():
    probs = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    assert feature_label_distortion(probs, torch.tensor([0, 0, 1]), "ce").item() == pytest.approx(0.0, abs=1e-6)


def test_fld_rejects_unknown_variant():
    with pytest.raises(ValueError, match="ce, mi"):
        feature_label_distortion(torch.ones(2, 2) / 2, torch.tensor([0, 1]), "kl")


def test_hinge_is_zero_for_small_gradients_and_quadratic_above():
    assert lipschitz_hinge(torch.tensor([0.1, 0.39, 0.4]), tau=0.4, rho=100.0).item() == 0.0
    value = lipschitz_hinge(torch.tensor([0.0, 0.6]), tau=0.4, rho=100.0).item()
    assert value == pytest.approx(100.0 * (0.2**2) / 2, rel=1e-5)
