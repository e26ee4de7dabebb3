"""OTDD (ORCA's stage-1 objective): the Bures term and the augmented cost."""

from __future__ import annotations

import math

import pytest
import torch

from components.alignment import sinkhorn_divergence
from components.otdd import LabelledCloud, bures_wasserstein_sq, label_distances, otdd


def test_bures_matches_a_hand_computation():
    # Diagonal covariances: W2^2 = |m1 - m2|^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2.
    m1, m2 = torch.tensor([0.0, 1.0]), torch.tensor([3.0, -1.0])
    s1, s2 = torch.diag(torch.tensor([4.0, 1.0])), torch.diag(torch.tensor([1.0, 9.0]))
    expected = (9.0 + 4.0) + (2.0 - 1.0) ** 2 + (1.0 - 3.0) ** 2
    assert bures_wasserstein_sq(m1, s1, m2, s2).item() == pytest.approx(expected, rel=1e-5)
    # Commuting case with a rotation: the same value in any common basis.
    q, _ = torch.linalg.qr(torch.randn(2, 2, generator=torch.Generator().manual_seed(0)))
    rotated = bures_wasserstein_sq(q @ m1, q @ s1 @ q.T, q @ m2, q @ s2 @ q.T)
    assert rotated.item() == pytest.approx(expected, rel=1e-4)
    assert bures_wasserstein_sq(m1, s1, m1, s1).item() == pytest.approx(0.0, abs=1e-5)


def test_label_distances_match_the_full_covariance_formula():
    g = torch.Generator().manual_seed(1)
    src = torch.randn(60, 5, generator=g, dtype=torch.float64)
    labels = torch.arange(60) % 3
    cloud = LabelledCloud.build(src, labels)
    x = torch.randn(7, 5, generator=g, dtype=torch.float64) * 2 + 1
    xc = x - x.mean(0)
    s_x = xc.T @ xc / len(x)
    got = label_distances(cloud, x)
    for c in range(3):
        pts = src[labels == c]
        pc = pts - pts.mean(0)
        expected = bures_wasserstein_sq(pts.mean(0), pc.T @ pc / len(pts), x.mean(0), s_x)
        assert got[c].item() == pytest.approx(expected.item(), rel=1e-6)
    # Same class of the same dataset: zero label distance on the diagonal.
    assert torch.diagonal(cloud.label_cost).abs().max().item() < 1e-8


def test_with_all_labels_equal_otdd_is_the_feature_divergence_plus_the_gaussian_distance():
    # One source class and one target class: the label term is a constant w added to every
    # cross cost (OT shifts by exactly w) and 0 within each side, so OTDD = S_eps(features) + w.
    g = torch.Generator().manual_seed(2)
    src = torch.randn(80, 4, generator=g, dtype=torch.float64)
    x = torch.randn(20, 4, generator=g, dtype=torch.float64) + 0.5
    cloud = LabelledCloud.build(src, torch.zeros(80, dtype=torch.long))
    scale = 3.0
    value = otdd(cloud, x, torch.zeros(20, dtype=torch.long), eps=0.1, max_iter=2000, scale=scale)
    feature_only = sinkhorn_divergence(x, src, 0.1, 2000, scale=scale)
    w = label_distances(cloud, x)[0]
    assert value.item() == pytest.approx((feature_only + w).item(), rel=1e-4)


def test_otdd_separates_class_structure_and_has_finite_gradients_for_tiny_classes():
    g = torch.Generator().manual_seed(3)
    centres = torch.tensor([[4.0, 0.0, 0.0], [-4.0, 0.0, 0.0]])
    labels = torch.arange(100) % 2
    src = centres[labels] + 0.3 * torch.randn(100, 3, generator=g)
    cloud = LabelledCloud.build(src, labels)
    t_labels = torch.arange(10) % 2
    matched = centres[t_labels] + 0.3 * torch.randn(10, 3, generator=g)
    swapped = centres[1 - t_labels] + 0.3 * torch.randn(10, 3, generator=g)
    # Each target class as a whole against the source: both layouts cover both clusters, but
    # only the class Gaussians of the matched layout resemble single source classes.
    assert otdd(cloud, matched, t_labels, 0.1).item() < otdd(cloud, src[:10] * 3, t_labels, 0.1).item()
    x = swapped.clone().requires_grad_(True)
    two_per_class = torch.tensor([0, 0, 1, 1, 1, 1, 1, 1, 1, 1])  # rank-1 covariance in d=3
    otdd(cloud, x, two_per_class, 0.1).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_a_gradient_step_on_otdd_lowers_it():
    g = torch.Generator().manual_seed(4)
    labels = torch.arange(200) % 4
    src = torch.randn(4, 6, generator=g)[labels] * 3 + torch.randn(200, 6, generator=g)
    cloud = LabelledCloud.build(src, labels)
    x = (torch.randn(32, 6, generator=g) * 2).requires_grad_(True)
    t = torch.arange(32) % 4
    opt = torch.optim.Adam([x], lr=0.1)
    first = None
    for _ in range(30):
        loss = otdd(cloud, x, t, 0.1)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert otdd(cloud, x, t, 0.1).item() < 0.5 * first
    assert math.isfinite(first)
