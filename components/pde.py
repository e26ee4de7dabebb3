"""Generated PDEBench-style 1D datasets: linear advection and diffusion-reaction, pure numpy.

Both problems live on the periodic unit interval, sampled at the ``n_x`` cell centres
``x_j = (j + 1/2) / n_x``. A sample maps the initial condition ``u(0, x)`` (the input, shape
(1, n_x)) to the solution at ``n_snapshots`` equally spaced times ``t_k = t_final * k / n_snapshots``,
``k = 1..n_snapshots`` (the target, shape (n_snapshots, n_x)).

Initial conditions follow PDEBench's ``init_multi``: a sum of ``n_waves`` sines
``sum_i A_i sin(2 pi k_i x + phi_i)`` with integer wavenumbers ``k_i`` in ``1..k_max``, amplitudes
``A_i ~ U(0, 1)`` and phases ``phi_i ~ U(0, 2 pi)``. PDEBench's occasional absolute value and
tanh window are left out: they make the initial condition non-smooth, and the advection solution
below is exact only because every initial condition is a trigonometric polynomial.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "grid",
    "random_initial_conditions",
    "advection",
    "diffusion_reaction",
    "generate_advection",
    "generate_diffusion_reaction",
]


def grid(n_x: int) -> np.ndarray:
    """Cell centres ``(j + 1/2) / n_x`` of a uniform periodic grid on [0, 1), shape (n_x,), float64."""
    _check_positive_int("n_x", n_x)
    return (np.arange(n_x, dtype=np.float64) + 0.5) / n_x


def random_initial_conditions(
    rng: np.random.Generator, n_samples: int, n_x: int, n_waves: int = 2, k_max: int = 4
) -> np.ndarray:
    """Random sums of sines on the cell-centre grid, as in PDEBench.

    ``u(x) = sum_{i < n_waves} A_i sin(2 pi k_i x + phi_i)`` with ``k_i`` drawn uniformly from
    ``1..k_max`` (with replacement), ``A_i ~ U(0, 1)``, ``phi_i ~ U(0, 2 pi)``.

    Args:
        rng: the only source of randomness; the same generator state gives the same arrays.
        n_samples: number of initial conditions.
        n_x: grid cells; must exceed ``2 * k_max`` so every wave is resolved below Nyquist.
        n_waves: sines per initial condition.
        k_max: largest integer wavenumber.

    Returns:
        (n_samples, n_x) float64 array.
    """
    for name, value in (("n_samples", n_samples), ("n_x", n_x), ("n_waves", n_waves), ("k_max", k_max)):
        _check_positive_int(name, value)
    if n_x <= 2 * k_max:
        raise ValueError(f"n_x={n_x} must exceed 2 * k_max = {2 * k_max} to resolve wavenumber {k_max}")
    k = rng.integers(1, k_max + 1, size=(n_samples, n_waves, 1))
    amplitude = rng.uniform(0.0, 1.0, size=(n_samples, n_waves, 1))
    phase = rng.uniform(0.0, 2.0 * np.pi, size=(n_samples, n_waves, 1))
    x = grid(n_x)[None, None, :]
    return (amplitude * np.sin(2.0 * np.pi * k * x + phase)).sum(axis=1)  # (n_samples, n_x)


def advection(u0: np.ndarray, beta: float, t: float) -> np.ndarray:
    """Exact solution ``u(t, x) = u0(x - beta t)`` of ``u_t + beta u_x = 0`` with periodic BC on [0, 1).

    The shift is applied in Fourier space: mode ``k`` is multiplied by ``exp(-2 pi i k beta t)``.
    For a trigonometric polynomial of degree below ``n_x / 2`` (every initial condition from
    :func:`random_initial_conditions`) the grid values determine the function exactly, so the
    spectral shift is the exact solution at any real shift, not an interpolation; the only error
    is floating-point round-off. For other inputs it shifts their trigonometric interpolant.

    Args:
        u0: initial values on the cell-centre grid, shape (..., n_x).
        beta: advection speed.
        t: time.

    Returns:
        float64 array shaped like ``u0``.
    """
    u0 = np.asarray(u0, dtype=np.float64)
    n_x = u0.shape[-1]
    k = np.fft.rfftfreq(n_x, d=1.0 / n_x)  # integer wavenumbers 0..n_x // 2
    # Reduce the shift modulo the period first: exp of a huge phase loses digits otherwise.
    shift = math.fmod(beta * t, 1.0)
    u_hat = np.fft.rfft(u0, axis=-1) * np.exp(-2j * np.pi * k * shift)
    return np.fft.irfft(u_hat, n=n_x, axis=-1)


def diffusion_reaction(
    u0: np.ndarray, times: ArrayLike, nu: float = 0.5, rho: float = 1.0, dt: float = 1e-3
) -> np.ndarray:
    """Solve ``u_t = nu u_xx + rho u (1 - u)`` on periodic [0, 1) by Strang splitting.

    One step of length ``h`` is ``R(h/2) D(h) R(h/2)``, with both sub-flows exact:

    * reaction ``R(s)``: the logistic ODE's closed form ``u / (u + (1 - u) exp(-rho s))``;
    * diffusion ``D(s)``: Fourier mode ``k`` times ``exp(-nu (2 pi k)^2 s)``.

    Neither sub-step amplifies anything, so the scheme is unconditionally stable; the symmetric
    splitting makes it second-order accurate in ``h``. Each interval between requested times is
    cut into ``ceil(interval / dt)`` equal steps, so ``dt`` is an upper bound on the step.
    The logistic flow keeps [0, 1] invariant, which is why initial values should lie in [0, 1].

    Args:
        u0: initial values on the cell-centre grid, shape (..., n_x).
        times: increasing positive output times, shape (n_t,).
        nu: diffusion coefficient, >= 0.
        rho: reaction rate.
        dt: largest time step.

    Returns:
        float64 array of shape (..., n_t, n_x).
    """
    u = np.asarray(u0, dtype=np.float64)
    times = np.asarray(times, dtype=np.float64)
    if times.ndim != 1 or len(times) == 0 or times[0] <= 0 or np.any(np.diff(times) <= 0):
        raise ValueError(f"times must be a non-empty, strictly increasing sequence of positive values; got {times}")
    if not (math.isfinite(nu) and nu >= 0):
        raise ValueError(f"nu must be finite and >= 0 (backward diffusion is ill-posed); got {nu}")
    if not math.isfinite(rho):
        raise ValueError(f"rho must be finite; got {rho}")
    _check_positive_float("dt", dt)
    k = np.fft.rfftfreq(u.shape[-1], d=1.0 / u.shape[-1])
    out = []
    t_prev = 0.0
    for t_next in times:
        n_steps = max(1, math.ceil((t_next - t_prev) / dt - 1e-9))  # 1e-9: 1.0 / 0.1 is 10.000000000000002
        h = (t_next - t_prev) / n_steps
        decay = np.exp(-nu * (2.0 * np.pi * k) ** 2 * h)  # diffusion over one full step, per mode
        growth = math.exp(-rho * h / 2.0)  # logistic factor over half a step
        for _ in range(n_steps):
            u = u / (u + (1.0 - u) * growth)
            u = np.fft.irfft(np.fft.rfft(u, axis=-1) * decay, n=u.shape[-1], axis=-1)
            u = u / (u + (1.0 - u) * growth)
        out.append(u)
        t_prev = t_next
    return np.stack(out, axis=-2)


def generate_advection(
    n_samples: int,
    n_x: int,
    seed: int,
    beta: float = 0.4,
    t_final: float = 2.0,
    n_snapshots: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Random advection samples: initial condition in, solution at later times out.

    Args:
        n_samples: number of samples.
        n_x: grid cells (> 8, to resolve the PDEBench wavenumbers 1..4).
        seed: seed of the ``numpy.random.Generator`` drawing the initial conditions.
        beta: advection speed (PDEBench uses 0.1, 0.4, 1.0, 4.0).
        t_final: last output time (PDEBench: 2.0).
        n_snapshots: output times ``t_final * k / n_snapshots``, ``k = 1..n_snapshots``.

    Returns:
        ``x`` (n_samples, 1, n_x) and ``y`` (n_samples, n_snapshots, n_x), both float32.
    """
    _check_generator_args(n_samples, n_x, n_snapshots, t_final)
    if not math.isfinite(beta):
        raise ValueError(f"beta must be finite; got {beta}")
    u0 = random_initial_conditions(np.random.default_rng(seed), n_samples, n_x)
    times = t_final * np.arange(1, n_snapshots + 1) / n_snapshots
    y = np.stack([advection(u0, beta, float(t)) for t in times], axis=1)
    return u0[:, None, :].astype(np.float32), y.astype(np.float32)


def generate_diffusion_reaction(
    n_samples: int,
    n_x: int,
    seed: int,
    nu: float = 0.5,
    rho: float = 1.0,
    t_final: float = 1.0,
    n_snapshots: int = 1,
    dt: float = 1e-3,
) -> tuple[np.ndarray, np.ndarray]:
    """Random diffusion-reaction samples (PDEBench ``ReacDiff``, ``nu=0.5, rho=1.0``).

    Each random sine sum is rescaled to [0, 1] on the grid, ``(u - min u) / (max u - min u)``,
    as PDEBench does for this equation: u is a density and the logistic term needs values in
    [0, 1]. The rescaling is affine, so the initial condition is still a trigonometric polynomial.

    Args:
        n_samples: number of samples.
        n_x: grid cells (> 8).
        seed: seed of the ``numpy.random.Generator`` drawing the initial conditions.
        nu: diffusion coefficient.
        rho: reaction rate.
        t_final: last output time (PDEBench: 1.0).
        n_snapshots: output times ``t_final * k / n_snapshots``, ``k = 1..n_snapshots``.
        dt: largest splitting step; see :func:`diffusion_reaction`.

    Returns:
        ``x`` (n_samples, 1, n_x) and ``y`` (n_samples, n_snapshots, n_x), both float32.
    """
    _check_generator_args(n_samples, n_x, n_snapshots, t_final)
    u0 = random_initial_conditions(np.random.default_rng(seed), n_samples, n_x)
    lo, hi = u0.min(axis=1, keepdims=True), u0.max(axis=1, keepdims=True)
    u0 = (u0 - lo) / (hi - lo)
    times = t_final * np.arange(1, n_snapshots + 1) / n_snapshots
    y = diffusion_reaction(u0, times, nu=nu, rho=rho, dt=dt)
    return u0[:, None, :].astype(np.float32), y.astype(np.float32)


def _check_generator_args(n_samples: int, n_x: int, n_snapshots: int, t_final: float) -> None:
    _check_positive_int("n_samples", n_samples)
    _check_positive_int("n_x", n_x)
    _check_positive_int("n_snapshots", n_snapshots)
    _check_positive_float("t_final", t_final)


def _check_positive_int(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")


def _check_positive_float(name: str, value: float) -> None:
    if not (isinstance(value, int | float | np.floating) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0; got {value!r}")
