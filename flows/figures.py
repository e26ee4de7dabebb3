"""Diagnostic figures as PNG files: alignment projections, epoch curves, confusion matrices,
dense-field predictions and bound reports.

Every function takes plain numpy arrays or lists of dicts, draws on a fresh
``matplotlib.figure.Figure`` rendered by the Agg canvas (no pyplot: no global state, safe from
worker threads), writes the PNG atomically and returns its path. Fonts are set explicitly
(never below 9 pt) so a changed global ``rcParams`` cannot make them unreadable.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import BoundaryNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from components.atomic import atomic_path

__all__ = ["alignment_projection", "bound_report", "confusion_matrix", "epoch_curves", "field_predictions"]

DPI = 110
TITLE, LABEL, TICK = 12, 10, 9  # font sizes in points
MAX_LEGEND = 10  # more classes than this get a colorbar instead of a legend
_MAX_FIT_ROWS = 5000  # PCA is fitted and the source cloud drawn on at most this many rows
BOUND_TERMS = ("bound/fit", "bound/fa", "bound/fld", "bound/value")


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:  # tmp ends in ".tmp", so the format must be explicit
        fig.savefig(tmp, format="png", dpi=DPI)
    return path


def _style(ax: Axes, title: str = "", xlabel: str = "", ylabel: str = "") -> None:
    ax.set_title(title, fontsize=LABEL + 1)
    ax.set_xlabel(xlabel, fontsize=LABEL)
    ax.set_ylabel(ylabel, fontsize=LABEL)
    ax.tick_params(labelsize=TICK)


def _array(name: str, value: np.ndarray, ndim: int | tuple[int, ...]) -> np.ndarray:
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
    source, before, after = (_array(k, v, 2) for k, v in (("source", source), ("before", before), ("after", after)))
    labels = _array("labels", labels, 1)
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
    names = class_names or [str(i) for i in range(ids.max() + 1 if len(ids) else 0)]

    mean, axes, frac = _pca2(np.concatenate([source, before, after]))
    src = (source[_evenly(len(source), _MAX_FIT_ROWS)] - mean) @ axes
    fig = _figure(11.0, 4.8)
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
        _style(ax, title, f"PC 1 ({frac[0]:.0%} of variance)")
    panels[0].set_ylabel(f"PC 2 ({frac[1]:.0%} of variance)", fontsize=LABEL)
    if many:
        cbar = fig.colorbar(mappable, ax=panels, shrink=0.9)
        step = max(1, len(ids) // 10)  # at most ~10 tick labels
        cbar.set_ticks(np.arange(0, len(ids), step), labels=[names[i] for i in ids[::step]])
        cbar.set_label(f"{label_kind} ({len(ids)} {label_kind}s)", fontsize=LABEL)
        cbar.ax.tick_params(labelsize=TICK)
    else:
        handles, texts = panels[0].get_legend_handles_labels()
        leg = fig.legend(handles, texts, loc="outside right upper", fontsize=TICK, title=label_kind, markerscale=2)
        leg.get_title().set_fontsize(LABEL)
        for handle in leg.legend_handles:  # the faint source colour is unreadable in the legend
            handle.set_alpha(1.0)
    fig.suptitle(f"Target embeddings ({len(labels)} points) over the source cloud ({len(source)})", fontsize=TITLE)
    return _save(fig, path)


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
        fig = _figure(6.0, 3.0)
        ax = fig.subplots()
        ax.text(0.5, 0.5, empty_message, ha="center", va="center", fontsize=LABEL + 1, transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.suptitle(title, fontsize=TITLE)
        return _save(fig, path)
    if not present:
        found = sorted({k for record in history for k in record})
        raise ValueError(f"keys {keys} are absent from every history record; the records hold {found}")
    fig = _figure(6.5, 1.2 + 1.9 * len(present))
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
        _style(ax, ylabel=key)
    axs[-1].set_xlabel(xlabel, fontsize=LABEL)
    axs[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title, fontsize=TITLE)
    return _save(fig, path)


def confusion_matrix(counts: np.ndarray, class_names: list[str], path: str | Path) -> Path:
    """Confusion matrix: rows are true classes, columns predictions; colour is the row fraction.

    Args:
        counts: Non-negative integer counts, shape (K, K); ``counts[i, j]`` = true ``i``, predicted ``j``.
        class_names: K class names.
        path: Output PNG path.

    Returns:
        ``path``, written atomically.
    """
    counts = _array("counts", counts, 2)
    if counts.shape[0] != counts.shape[1]:
        raise ValueError(f"counts must be square (K, K), got shape {counts.shape}")
    if len(class_names) != len(counts):
        raise ValueError(f"class_names has {len(class_names)} names but counts is {counts.shape}")
    if (counts < 0).any():
        raise ValueError("counts must be non-negative")
    k = len(counts)
    totals = counts.sum(axis=1, keepdims=True)
    rates = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    side = float(np.clip(2.8 + 0.5 * k, 5.5, 14.0))
    fig = _figure(side + 1.0, side)
    ax = fig.subplots()
    image = ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    if k <= 25:  # beyond that the counts cannot be read at 9 pt anyway
        for i, j in np.ndindex(counts.shape):
            colour = "white" if rates[i, j] > 0.5 else "black"
            ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=TICK, color=colour)
    long = max((len(n) for n in class_names), default=0) > 3
    step = -(-k // 40)  # beyond ~40 tick labels they overlap even at 9 pt: label every step-th class
    ticks, names = range(0, k, step), list(class_names)[::step]
    ax.set_xticks(ticks, names, rotation=45 if long else 0, ha="right" if long else "center")
    ax.set_yticks(ticks, names)
    _style(ax, xlabel="predicted class", ylabel="true class")
    cbar = fig.colorbar(image, ax=ax, shrink=0.8)
    cbar.set_label("fraction of the true class (row-normalised)", fontsize=LABEL)
    cbar.ax.tick_params(labelsize=TICK)
    total = counts.sum()
    accuracy = np.trace(counts) / total if total else float("nan")
    note = "" if k <= 25 else "; counts not printed for more than 25 classes"
    fig.suptitle(f"Confusion matrix ({int(total)} samples, accuracy {accuracy:.1%}{note})", fontsize=TITLE)
    return _save(fig, path)


def _rel_l2(true: np.ndarray, pred: np.ndarray) -> float:
    return float(np.linalg.norm(pred - true) / max(np.linalg.norm(true), 1e-12))


def _fields_1d(fig: Figure, x: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray) -> None:
    channels = [0] if y_true.shape[1] == 1 else [0, y_true.shape[1] - 1]
    axs = fig.subplots(len(x), 1 + len(channels), squeeze=False, sharex=True)
    grid = np.arange(x.shape[-1])
    for s, row in enumerate(axs):
        row[0].plot(grid, x[s, 0], color="0.35", linewidth=1.2)
        _style(row[0], f"sample {s}: input (channel 0)", ylabel="value")
        for ax, c in zip(row[1:], channels, strict=True):
            ax.plot(grid, y_true[s, c], color="black", linewidth=1.5, label="true")
            ax.plot(grid, y_pred[s, c], color="tab:red", linewidth=1.2, linestyle="--", label="predicted")
            _style(ax, f"target channel {c}: rel. L2 error {_rel_l2(y_true[s, c], y_pred[s, c]):.3f}")
    axs[0, 1].legend(fontsize=TICK, loc="best")
    for ax in axs[-1]:  # x is shared: label the bottom row only
        ax.set_xlabel("grid index", fontsize=LABEL)


def _fields_2d(fig: Figure, x: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray) -> None:
    axs = fig.subplots(len(x), 4, squeeze=False)
    for s, row in enumerate(axs):
        true, pred = y_true[s, 0], y_pred[s, 0]
        lo, hi = min(true.min(), pred.min()), max(true.max(), pred.max())  # true and predicted share a scale
        panels = (
            (x[s, 0], "input", "viridis", None, None),
            (true, "true", "viridis", lo, hi),
            (pred, f"predicted (rel. L2 {_rel_l2(true, pred):.3f})", "viridis", lo, hi),
            (np.abs(pred - true), "|error|", "magma", 0.0, None),
        )
        for ax, (img, name, cmap, vmin, vmax) in zip(row, panels, strict=True):
            image = ax.imshow(img, cmap=cmap, vmin=vmin, vmax=vmax, origin="lower")
            _style(ax, f"sample {s}: {name}")
            ax.set_xticks([])
            ax.set_yticks([])
            cbar = fig.colorbar(image, ax=ax, shrink=0.85)
            cbar.ax.tick_params(labelsize=TICK)


def field_predictions(x: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, path: str | Path, n: int = 3) -> Path:
    """True against predicted dense fields for the first ``n`` samples, one row per sample.

    1-D fields (N, C, L): input channel 0, then true and predicted curves overlaid for target
    channel 0 (and the last channel when C > 1). 2-D fields (N, C, H, W): input, true, predicted
    and ``|error|`` images of channel 0, true and predicted on one colour scale.

    Args:
        x: Inputs, shape (N, C_in, L) or (N, C_in, H, W).
        y_true: Targets, shape (N, C, L) or (N, C, H, W), same grid as ``x``.
        y_pred: Predictions, same shape as ``y_true``.
        path: Output PNG path.
        n: Number of samples to draw (at most N).

    Returns:
        ``path``, written atomically.
    """
    x = _array("x", x, (3, 4))
    y_true, y_pred = _array("y_true", y_true, (3, 4)), _array("y_pred", y_pred, (3, 4))
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} must have the same shape")
    if x.ndim != y_true.ndim or len(x) != len(y_true) or x.shape[2:] != y_true.shape[2:]:
        raise ValueError(f"x {x.shape} must match y_true {y_true.shape} in samples and grid (all but the channels)")
    if n < 1 or len(x) == 0:
        raise ValueError(f"n must be >= 1 and x must hold samples, got n={n} and {len(x)} samples")
    n = min(n, len(x))
    x, y_true, y_pred = (np.asarray(a[:n], dtype=float) for a in (x, y_true, y_pred))
    if x.ndim == 3:
        fig = _figure(4.2 * (2 if y_true.shape[1] == 1 else 3), 0.6 + 2.5 * n)
        _fields_1d(fig, x, y_true, y_pred)
        kind = f"1-D fields, {y_true.shape[1]} target channel{'s' if y_true.shape[1] > 1 else ''}"
    else:
        fig = _figure(13.0, 0.6 + 3.0 * n)
        _fields_2d(fig, x, y_true, y_pred)
        kind = f"2-D fields, channel 0 of {x.shape[1]} input / {y_true.shape[1]} target"
    fig.suptitle(f"Predictions on {n} test samples ({kind})", fontsize=TITLE)
    return _save(fig, path)


def _check_rows(rows: Sequence[dict]) -> None:
    if not rows:
        raise ValueError("rows must hold at least one run")
    for i, row in enumerate(rows):
        missing = [k for k in (*BOUND_TERMS, "test_error") if k not in row]
        if missing:
            raise ValueError(f"rows[{i}] lacks {missing}; each row needs {[*BOUND_TERMS, 'test_error']}")


def _pearson(x: np.ndarray, y: np.ndarray) -> str:
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.std(x[ok]) == 0 or np.std(y[ok]) == 0:
        return ""
    return f", r = {np.corrcoef(x[ok], y[ok])[0, 1]:.2f}"


def _bound_bars(fig: Figure, row: dict) -> None:
    ax = fig.subplots()
    lip, w = row.get("bound/lipschitz"), row.get("bound/w")
    if lip is not None and w is not None:
        fa_name, fa = "lipschitz × w", lip * w
    else:
        fa_name, fa = ("lipschitz × fa", lip * row["bound/fa"]) if lip is not None else ("fa", row["bound/fa"])
    names = ["fit", fa_name, "fld", "value (sum)"]
    values = [row["bound/fit"], fa, row["bound/fld"], row["bound/value"]]
    bars = ax.bar(names, values, color=["tab:blue", "tab:orange", "tab:green", "0.4"])
    ax.bar_label(bars, fmt="%.3g", fontsize=TICK, padding=2)
    ax.axhline(row["test_error"], color="tab:red", linestyle="--", label=f"test error = {row['test_error']:.3g}")
    ax.legend(fontsize=TICK, loc="upper left")
    ax.margins(y=0.15)
    note = f" (lipschitz = {lip:.3g}, w = {w:.3g})" if lip is not None and w is not None else ""
    _style(ax, f"Bound terms of one run{note}", "bound term", "value")


def bound_report(rows: list[dict], path: str | Path) -> Path:
    """How well the bound and each of its terms track test error across runs.

    Several runs: a large scatter of ``bound/value`` (x) against ``test_error`` (y) with the
    Pearson correlation, and one small scatter per term in ``BOUND_TERMS``. One run: a bar chart
    of the terms (``fa`` weighted by ``bound/lipschitz`` when present, as it enters
    ``value = fit + lipschitz * fa + fld``) with the test error as a dashed line.

    Args:
        rows: One dict per run with ``bound/fit``, ``bound/fa``, ``bound/fld``, ``bound/value``
            and ``test_error`` (``bound/lipschitz`` and a point ``label`` are optional).
        path: Output PNG path.

    Returns:
        ``path``, written atomically.
    """
    _check_rows(rows)
    if len(rows) == 1:
        fig = _figure(6.5, 4.5)
        _bound_bars(fig, rows[0])
        fig.suptitle("Generalisation bound report", fontsize=TITLE)
        return _save(fig, path)
    error = np.array([r["test_error"] for r in rows], dtype=float)
    fig = _figure(12.0, 5.5)
    left, right = fig.subfigures(1, 2, width_ratios=[1.15, 1.0])
    ax = left.subplots()
    value = np.array([r["bound/value"] for r in rows], dtype=float)
    ax.scatter(value, error, s=30, color="tab:blue", label=f"one point per run ({len(rows)} runs)")
    if len(rows) <= 15:
        for r, vx, vy in zip(rows, value, error, strict=True):
            if "label" in r:
                ax.annotate(str(r["label"]), (vx, vy), xytext=(4, 4), textcoords="offset points", fontsize=TICK)
    ax.legend(fontsize=TICK, loc="best")
    ax.grid(alpha=0.3)
    _style(ax, f"bound value vs test error{_pearson(value, error)}", "bound/value", "test error")
    for i, (sub, term) in enumerate(zip(right.subplots(2, 2, sharey=True).flat, BOUND_TERMS, strict=True)):
        xs = np.array([r[term] for r in rows], dtype=float)
        sub.scatter(xs, error, s=14, color="tab:orange")
        sub.grid(alpha=0.3)
        _style(sub, f"{term}{_pearson(xs, error)}", term, "" if i % 2 else "test error")  # y is shared
    fig.suptitle("Generalisation bound against test error", fontsize=TITLE)
    return _save(fig, path)
