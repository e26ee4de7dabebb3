"""Invariants of the generated PDE data: exact solutions, convergence order, bounds, determinism."""

import numpy as np
import pytest

from components.pde import (
    advection,
    diffusion_reaction,
    generate_advection,
    generate_diffusion_reaction,
    grid,
    random_initial_conditions,
)


def _unit_ics(n_samples: int, n_x: int, seed: int) -> np.ndarray:
    """Random sine sums rescaled to [0, 1], as the diffusion-reaction generator uses them."""
    u0 = random_initial_conditions(np.random.default_rng(seed), n_samples, n_x)
    lo, hi = u0.min(axis=1, keepdims=True), u0.max(axis=1, keepdims=True)
    return (u0 - lo) / (hi - lo)


def test_grid_is_cell_centred_and_periodic():
    x = grid(8)
    assert np.allclose(x, [1 / 16, 3 / 16, 5 / 16, 7 / 16, 9 / 16, 11 / 16, 13 / 16, 15 / 16])


@pytest.mark.parametrize("beta", [0.1, 0.4, 1.0, 4.0])
def test_advection_over_one_period_returns_the_initial_condition(beta):
    u0 = random_initial_conditions(np.random.default_rng(0), 4, 64)
    np.testing.assert_allclose(advection(u0, beta, 1.0 / beta), u0, atol=1e-12)


@pytest.mark.parametrize("t", [0.013, 0.37, 1.9])
def test_advection_matches_the_shifted_sine_at_non_integer_shifts(t):
    beta, k, phase = 0.4, 3, 0.7
    x = grid(32)
    shift_in_cells = beta * t * 32
    assert abs(shift_in_cells - round(shift_in_cells)) > 0.05  # a genuine sub-cell shift
    u = advection(np.sin(2 * np.pi * k * x + phase), beta, t)
    np.testing.assert_allclose(u, np.sin(2 * np.pi * k * (x - beta * t) + phase), atol=1e-12)


def test_advection_is_not_a_cell_roll():
    """Guards against an integer-shift shortcut: half a cell must land between grid values."""
    x = grid(16)
    u = advection(np.sin(2 * np.pi * x), beta=1.0, t=0.5 / 16)
    assert not np.allclose(u, np.roll(np.sin(2 * np.pi * x), 1), atol=1e-3)
    np.testing.assert_allclose(u, np.sin(2 * np.pi * (x - 0.5 / 16)), atol=1e-12)


@pytest.mark.parametrize("k", [1, 3])
def test_pure_diffusion_decays_a_fourier_mode_exactly(k):
    nu, times = 0.5, np.array([0.01, 0.05, 0.1])
    x = grid(64)
    u = diffusion_reaction(0.5 + 0.3 * np.cos(2 * np.pi * k * x), times, nu=nu, rho=0.0, dt=0.02)
    expected = 0.5 + 0.3 * np.exp(-nu * (2 * np.pi * k) ** 2 * times)[:, None] * np.cos(2 * np.pi * k * x)
    np.testing.assert_allclose(u, expected, atol=1e-13)


@pytest.mark.parametrize("c", [0.0, 0.05, 0.5, 0.99, 1.0])
def test_pure_reaction_matches_the_logistic_closed_form(c):
    rho, times = 1.0, np.array([0.25, 1.0, 3.0])
    u = diffusion_reaction(np.full(16, c), times, nu=0.0, rho=rho, dt=0.1)
    expected = c / (c + (1 - c) * np.exp(-rho * times))
    np.testing.assert_allclose(u, np.broadcast_to(expected[:, None], u.shape), atol=1e-13)


def test_strang_splitting_is_second_order():
    # dt small enough that nu (2 pi k)^2 dt < 1 for k <= 4: the asymptotic regime
    u0 = _unit_ics(4, 32, seed=1)
    times = [0.05, 0.1]
    reference = diffusion_reaction(u0, times, dt=2.5e-5)
    errors = [np.abs(diffusion_reaction(u0, times, dt=dt) - reference).max() for dt in (2e-3, 1e-3, 5e-4)]
    ratios = [errors[0] / errors[1], errors[1] / errors[2]]
    print("errors", errors, "ratios", ratios)
    assert errors[0] > 1e-7  # the splitting error is measured, not round-off
    assert min(ratios) > 3


def test_diffusion_reaction_stays_in_the_unit_interval():
    x, y = generate_diffusion_reaction(16, 64, seed=0, n_snapshots=10, dt=0.01)
    assert x.min() == 0 and x.max() == 1  # the initial conditions are rescaled to [0, 1]
    assert y.min() >= 0 and y.max() <= 1
    # diffusion flattens and the logistic term pulls towards 1: the spatial mean grows
    assert (y[:, -1].mean(axis=1) > x[:, 0].mean(axis=1)).all()


def test_large_steps_are_stable():
    u = diffusion_reaction(_unit_ics(4, 128, seed=2), [1.0], dt=0.5)
    assert np.isfinite(u).all() and u.min() >= 0 and u.max() <= 1


def test_generator_shapes_dtypes_and_snapshot_times():
    x, y = generate_advection(5, 64, seed=0, n_snapshots=4)
    assert x.shape == (5, 1, 64) and y.shape == (5, 4, 64)
    assert x.dtype == np.float32 and y.dtype == np.float32
    # snapshot k is at t_final * k / n_snapshots = 0.5 k; beta * 0.5 = 0.2 of the period per snapshot
    np.testing.assert_allclose(y[:, 1], advection(x[:, 0], 0.4, 1.0), atol=1e-6)
    xd, yd = generate_diffusion_reaction(3, 32, seed=0, n_snapshots=2, t_final=0.1)
    assert xd.shape == (3, 1, 32) and yd.shape == (3, 2, 32) and yd.dtype == np.float32


@pytest.mark.parametrize("generate", [generate_advection, generate_diffusion_reaction])
def test_generators_are_seed_deterministic(generate):
    a = generate(6, 32, seed=7, n_snapshots=2)
    b = generate(6, 32, seed=7, n_snapshots=2)
    c = generate(6, 32, seed=8, n_snapshots=2)
    assert all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))
    assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[1], c[1])


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"n_samples": 0}, "n_samples"),
        ({"n_x": 8}, "n_x"),
        ({"n_snapshots": 0}, "n_snapshots"),
        ({"t_final": -1.0}, "t_final"),
        ({"n_samples": 2.5}, "n_samples"),
    ],
)
def test_generators_reject_bad_arguments(kwargs, name):
    args = {"n_samples": 2, "n_x": 32, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=name):
        generate_advection(**args)
    with pytest.raises(ValueError, match=name):
        generate_diffusion_reaction(**args)


def test_diffusion_reaction_rejects_bad_arguments():
    u0 = np.full(16, 0.5)
    with pytest.raises(ValueError, match="nu"):
        diffusion_reaction(u0, [1.0], nu=-0.1)
    with pytest.raises(ValueError, match="dt"):
        diffusion_reaction(u0, [1.0], dt=0.0)
    with pytest.raises(ValueError, match="times"):
        diffusion_reaction(u0, [0.5, 0.2])
