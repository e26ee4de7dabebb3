"""Invariants of the debiased Sinkhorn divergence (feature alignment)."""

import ot
import pytest
import torch

from components.alignment import SinkhornNotConverged, entropic_ot, self_entropic_ot, sinkhorn_divergence


def _clouds(seed: int = 0, n: int = 64, m: int = 48, d: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randn(m, d, generator=g)


def test_identical_clouds_have_zero_divergence():
    x, _ = _clouds()
    assert abs(sinkhorn_divergence(x, x.clone(), eps=0.5).item()) < 1e-4


def test_divergence_is_symmetric():
    x, y = _clouds()
    s_xy = sinkhorn_divergence(x, y, eps=0.5, max_iter=5000, tol=1e-7)
    s_yx = sinkhorn_divergence(y, x, eps=0.5, max_iter=5000, tol=1e-7)
    assert torch.allclose(s_xy, s_yx, rtol=1e-4, atol=1e-5)


def test_shift_makes_divergence_positive_and_growing():
    x, y = _clouds()
    s = [sinkhorn_divergence(x, x + shift, eps=0.5).item() for shift in (0.5, 1.0, 2.0)]
    assert 0 < s[0] < s[1] < s[2]
    # For a pure translation by t (every coordinate) the divergence tends to ||t||^2 = d t^2 as
    # eps -> 0 and stays below it for eps > 0.
    assert s[2] < 4.0 * x.shape[1] + 1e-3


def test_gradient_steps_decrease_divergence():
    x, y = _clouds()
    z = (y + 3.0).clone().requires_grad_(True)
    # The gradient w.r.t. one point carries its weight 1/m; scale the step to undo that.
    opt = torch.optim.SGD([z], lr=0.5 * len(z))
    values = []
    for _ in range(20):
        loss = sinkhorn_divergence(z, x, eps=0.5)
        opt.zero_grad()
        loss.backward()
        opt.step()
        values.append(loss.item())
    assert values[-1] < 0.2 * values[0]


def test_fixed_reference_term_matches_full_computation():
    x, y = _clouds()
    ot_yy = self_entropic_ot(ot.dist(y, y), eps=0.5, scale=2.0)
    full = sinkhorn_divergence(x, y, eps=0.5, scale=2.0)
    cached = sinkhorn_divergence(x, y, eps=0.5, ot_yy=ot_yy, scale=2.0)
    assert torch.allclose(full, cached)


N_SELF = 120  # points: the reference's plain Sinkhorn to 1e-12 costs O(N^2) per iteration


@pytest.mark.parametrize("eps", [0.05, 0.1, 1.0])
def test_symmetric_self_term_matches_a_converged_reference_without_warning(eps):
    """The debiasing term OT(a, a) by the symmetric fixed point equals plain Sinkhorn run to a
    tight tolerance (value and gradient), within the default cap and without a warning."""
    import warnings

    g = torch.Generator().manual_seed(5)
    y = torch.randn(N_SELF, 8, generator=g, dtype=torch.float64) * torch.linspace(0.5, 3.0, 8, dtype=torch.float64)
    scale = float(ot.dist(y, y).mean())
    a = torch.full((N_SELF,), 1 / N_SELF, dtype=torch.float64)
    y1, y2 = y.clone().requires_grad_(True), y.clone().requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SinkhornNotConverged)
        ours = self_entropic_ot(ot.dist(y1, y1), eps, scale=scale)
    ref = ot.solve(ot.dist(y2, y2), a, a, reg=eps * scale, reg_type="KL", max_iter=100000, tol=1e-12, grad="envelope")
    ours.backward()
    ref.value.backward()
    assert ours.item() == pytest.approx(ref.value.item(), rel=1e-6)
    # The rule watches the value; the plan (the gradient) is then within 0.1% of converged.
    assert (y1.grad - y2.grad).abs().max() <= 1e-3 * y2.grad.abs().max()


def test_non_convergence_is_reported_once_per_eps():
    """Two capped solves at one eps warn once (not once per step); another eps warns again."""
    import warnings

    from components.alignment import SinkhornNotConverged

    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(30, 4, generator=g), torch.randn(25, 4, generator=g) + 2.0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for eps in (0.0123, 0.0123, 0.0456):
            entropic_ot(x, y, eps, max_iter=2, tol=1e-12)
    reported = [str(w.message) for w in caught if issubclass(w.category, SinkhornNotConverged)]
    assert len(reported) == 2
    assert "eps=0.0123" in reported[0] and "eps=0.0456" in reported[1]
