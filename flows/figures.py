"""Diagnostic figures as PNG files: alignment projections and epoch curves (the evaluate stage's
figures are in :mod:`flows.eval_figures`), and what every figure shares.

Every function takes plain numpy arrays or lists of dicts, draws on a fresh
``matplotlib.figure.Figure`` rendered by the Agg canvas (no pyplot: no global state, safe from
worker threads), writes the PNG atomically and returns its path. Fonts are set explicitly
(never below 9 pt) so a changed global ``rcParams`` cannot make them unreadable.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import BoundaryNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from components.atomic import atomic_path

__all__ = [
    "alignment_projection",
    "epoch_curves",
    "new_figure",
    "save_figure",
    "style_axes",
    "checked_array",
    "DPI",
    "TITLE",
    "LABEL",
    "TICK",
]

DPI = 110
TITLE, LABEL, TICK = 12, 10, 9  # font sizes in points
MAX_LEGEND = 10  # more classes than this get a colorbar instead of a legend
_MAX_FIT_ROWS = 5000  # PCA is fitted and the source cloud drawn on at most this many rows


def new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:  # tmp ends in ".tmp", so the format must be explicit
        fig.savefig(tmp, format="png", dpi=DPI)
    return path


def style_axes(ax: Axes, title: str = "", xlabel: str = "", ylabel: str = "") -> None:
    ax.set_title(title, fontsize=LABEL + 1)
    ax.set_xlabel(xlabel, fontsize=LABEL)
    ax.set_ylabel(ylabel, fontsize=LABEL)
    ax.tick_params(labelsize=TICK)


def checked_array(name: str, value: np.ndarray, ndim: int | tuple[int, ...]) -> np.ndarray:
    arr = np.asarray(value)
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if arr.ndim not in allowed:
        raise ValueError(f"{name} must have {' or '.join(map(str, allowed))} dimensions, got shape {arr.shape}")
    return arr


def _evenly(n: int, limit: int) -> np.ndarray:
    """At most ``limit`` evenly spaced row indices of ``n``: deterministic, no seed needed."""
    return np.arange(n) if n <= limit else np.linspace(0, n - 1, limit).round().astype(int)


def _pca2(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean (d,), top-2 principal axes (d, 2) and their explained-variance fractions (2,)."""
    fit = x[_evenly(len(x), _MAX_FIT_ROWS)].astype(np.float64)
    mean = fit.mean(axis=0)
    _, s, vt = np.linalg.svd(fit - mean, full_matrices=False)
    axes = vt[:2].T
    # SVD signs are arbitrary: make each axis's largest loading positive so reruns look alike.
    axes = axes * np.sign(axes[np.abs(axes).argmax(axis=0), [0, 1]])
    var = s**2
    return mean, axes, var[:2] / max(var.sum(), 1e-300)


def _projection_labels(
    source: np.ndarray, before: np.ndarray, after: np.ndarray, labels: np.ndarray, class_names: list[str] | None
) -> tuple[np.ndarray, list[str]]:
    """:func:`alignment_projection`'s inputs checked: the label ids present and a name for each id."""
    if before.shape != after.shape:
        raise ValueError(f"before {before.shape} and after {after.shape} must have the same shape (m, d)")
    if source.shape[1] != before.shape[1]:
        raise ValueError(f"source has d={source.shape[1]} columns but before/after have d={before.shape[1]}")
    if len(labels) != len(before):
        raise ValueError(f"labels has {len(labels)} entries but before/after have m={len(before)} rows")
    if len(labels) and (not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0):
        raise ValueError(f"labels must be non-negative integers, got dtype {labels.dtype}")
    ids = np.unique(labels)
    if class_names is not None and len(ids) and ids.max() >= len(class_names):
        raise ValueError(f"labels go up to {ids.max()} but class_names has only {len(class_names)} names")
    return ids, class_names or [str(i) for i in range(ids.max() + 1 if len(ids) else 0)]


def _label_key(fig, panels, mappable, ids: np.ndarray, names: list[str], label_kind: str) -> None:  # noqa: ANN001
    """The labels' key: a colorbar with one bin per id when ``mappable`` (many ids), else a legend."""
    if mappable is not None:
        cbar = fig.colorbar(mappable, ax=panels, shrink=0.9)
        step = max(1, len(ids) // 10)  # at most ~10 tick labels
        cbar.set_ticks(np.arange(0, len(ids), step), labels=[names[i] for i in ids[::step]])
        cbar.set_label(f"{label_kind} ({len(ids)} {label_kind}s)", fontsize=LABEL)
        cbar.ax.tick_params(labelsize=TICK)
        return
    handles, texts = panels[0].get_legend_handles_labels()
    leg = fig.legend(handles, texts, loc="outside right upper", fontsize=TICK, title=label_kind, markerscale=2)
    leg.get_title().set_fontsize(LABEL)
    for handle in leg.legend_handles:  # the faint source colour is unreadable in the legend
        handle.set_alpha(1.0)


def alignment_projection(
    source: np.ndarray,
    before: np.ndarray,
    after: np.ndarray,
    labels: np.ndarray,
    class_names: list[str] | None,
    path: str | Path,
    label_kind: str = "class",
) -> Path:
    """Target embeddings before and after alignment, projected on one shared 2-D PCA.

    The PCA is fitted on ``source ∪ before ∪ after`` so both panels share axes and distances
    are comparable across them. The source cloud is drawn in light grey behind the target points.

    Args:
        source: Source-modality embeddings, shape (n, d).
        before: Target embeddings before alignment, shape (m, d).
        after: Target embeddings after alignment, shape (m, d).
        labels: Non-negative integer label per target row, shape (m,).
        class_names: Name per label id, or None to use the ids themselves.
        path: Output PNG path.
        label_kind: ``"class"``, or ``"pseudo-label"`` for k-means ids of non-classification tasks.

    Returns:
        ``path``, written atomically.
    """
    source, before, after = (
        checked_array(k, v, 2) for k, v in (("source", source), ("before", before), ("after", after))
    )
    labels = checked_array("labels", labels, 1)
    ids, names = _projection_labels(source, before, after, labels, class_names)
    mean, axes, frac = _pca2(np.concatenate([source, before, after]))
    src = (source[_evenly(len(source), _MAX_FIT_ROWS)] - mean) @ axes
    fig = new_figure(11.0, 4.8)
    panels = fig.subplots(1, 2, sharex=True, sharey=True)
    many = len(ids) > MAX_LEGEND
    # Label ids are categories: beyond the legend limit, a colorbar with one discrete bin per id.
    cmap = colormaps["tab20" if len(ids) <= 20 else "turbo"].resampled(len(ids)) if many else colormaps["tab10"]
    for ax, emb, title in zip(panels, (before, after), ("before alignment", "after alignment"), strict=True):
        proj = (emb - mean) @ axes
        ax.scatter(src[:, 0], src[:, 1], s=4, c="0.75", alpha=0.5, linewidths=0, label="source")
        if many:
            codes = np.searchsorted(ids, labels)  # 0..k-1, so each id gets its own colour bin
            norm = BoundaryNorm(np.arange(len(ids) + 1) - 0.5, len(ids))
            mappable = ax.scatter(proj[:, 0], proj[:, 1], s=10, c=codes, cmap=cmap, norm=norm, linewidths=0)
        else:
            for j, i in enumerate(ids):
                pts = proj[labels == i]
                ax.scatter(pts[:, 0], pts[:, 1], s=10, color=cmap(j), linewidths=0, label=names[i])
        style_axes(ax, title, f"PC 1 ({frac[0]:.0%} of variance)")
    panels[0].set_ylabel(f"PC 2 ({frac[1]:.0%} of variance)", fontsize=LABEL)
    _label_key(fig, panels, mappable if many else None, ids, names, label_kind)
    fig.suptitle(f"Target embeddings ({len(labels)} points) over the source cloud ({len(source)})", fontsize=TITLE)
    return save_figure(fig, path)


def _message_figure(message: str, title: str, path: str | Path) -> Path:
    """A figure that says, in words, why it holds no curves."""
    fig = new_figure(6.0, 3.0)
    ax = fig.subplots()
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=LABEL + 1, transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.suptitle(title, fontsize=TITLE)
    return save_figure(fig, path)


def epoch_curves(
    history: list[dict[str, float]],
    keys: list[str],
    path: str | Path,
    title: str,
    xlabel: str = "epoch",
    empty_message: str = "no epochs run (alignment skipped)",
    x: str | None = None,
) -> Path:
    """One subplot per metric key (shared x axis), so metrics on different scales stay readable.

    Args:
        history: One record per epoch, e.g. ``[{"fa": 0.4, "fld": 1.2}, ...]``; epoch ``i`` is
            the record's index (0-based, as in the CSV curves of ``flows.plots``).
        keys: Metrics to draw, in order; keys absent from every record are skipped.
        path: Output PNG path.
        title: Figure title.
        xlabel: Label of the shared x axis.
        empty_message: Text drawn instead of curves when ``history`` is empty.
        x: The record key holding each record's x value (e.g. ``step``); None: its index. A key
            absent from a record leaves that record out of its curve, so records logged at
            different cadences (per step, per epoch) share one figure.

    Returns:
        ``path``, written atomically.

    Raises:
        ValueError: if ``history`` is non-empty but holds none of ``keys``.
    """
    present = [k for k in keys if any(k in record for record in history)]
    if not history:
        return _message_figure(empty_message, title, path)
    if not present:
        found = sorted({k for record in history for k in record})
        raise ValueError(f"keys {keys} are absent from every history record; the records hold {found}")
    fig = new_figure(6.5, 1.2 + 1.9 * len(present))
    axs = np.atleast_1d(fig.subplots(len(present), 1, sharex=True, squeeze=False)[:, 0])
    xs = np.array([record[x] for record in history] if x else np.arange(len(history)), dtype=float)
    for i, (ax, key) in enumerate(zip(axs, present, strict=True)):
        values = np.array([record.get(key, np.nan) for record in history], dtype=float)
        if x:  # each curve through its own records only
            keep = np.array([key in record for record in history])
            xs_key, values = xs[keep], values[keep]
        else:
            xs_key = xs
        finite = values[np.isfinite(values)]
        last = f"last {finite[-1]:.4g}" if len(finite) else "no values"
        ax.plot(xs_key, values, color=f"C{i % 10}", marker="o", markersize=3, linewidth=1.5, label=f"{key} ({last})")
        ax.legend(fontsize=TICK, loc="best")
        ax.grid(alpha=0.3)
        style_axes(ax, ylabel=key)
    axs[-1].set_xlabel(xlabel, fontsize=LABEL)
    axs[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title, fontsize=TITLE)
    return save_figure(fig, path)
