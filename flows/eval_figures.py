"""The evaluate stage's figures as PNG files: confusion matrices, dense-field predictions and
bound reports (drawn as :mod:`flows.figures` draws: Agg canvas, atomic writes, fonts >= 9 pt)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from flows import figures
from flows.figures import LABEL, TICK, TITLE, checked_array, new_figure, style_axes

__all__ = ["BOUND_TERMS", "confusion_matrix", "field_predictions", "bound_report"]

BOUND_TERMS = ("bound/fit", "bound/fa", "bound/fld", "bound/value")


def confusion_matrix(counts: np.ndarray, class_names: list[str], path: str | Path) -> Path:
    """Confusion matrix: rows are true classes, columns predictions; colour is the row fraction.

    Args:
        counts: Non-negative integer counts, shape (K, K); ``counts[i, j]`` = true ``i``, predicted ``j``.
        class_names: K class names.
        path: Output PNG path.

    Returns:
        ``path``, written atomically.
    """
    counts = checked_array("counts", counts, 2)
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
    fig = new_figure(side + 1.0, side)
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
    style_axes(ax, xlabel="predicted class", ylabel="true class")
    cbar = fig.colorbar(image, ax=ax, shrink=0.8)
    cbar.set_label("fraction of the true class (row-normalised)", fontsize=LABEL)
    cbar.ax.tick_params(labelsize=TICK)
    total = counts.sum()
    accuracy = np.trace(counts) / total if total else float("nan")
    note = "" if k <= 25 else "; counts not printed for more than 25 classes"
    fig.suptitle(f"Confusion matrix ({int(total)} samples, accuracy {accuracy:.1%}{note})", fontsize=TITLE)
    return figures.save_figure(fig, path)


def _rel_l2(true: np.ndarray, pred: np.ndarray) -> float:
    return float(np.linalg.norm(pred - true) / max(np.linalg.norm(true), 1e-12))


def _fields_1d(fig: Figure, x: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray) -> None:
    channels = [0] if y_true.shape[1] == 1 else [0, y_true.shape[1] - 1]
    axs = fig.subplots(len(x), 1 + len(channels), squeeze=False, sharex=True)
    grid = np.arange(x.shape[-1])
    for s, row in enumerate(axs):
        row[0].plot(grid, x[s, 0], color="0.35", linewidth=1.2)
        style_axes(row[0], f"sample {s}: input (channel 0)", ylabel="value")
        for ax, c in zip(row[1:], channels, strict=True):
            ax.plot(grid, y_true[s, c], color="black", linewidth=1.5, label="true")
            ax.plot(grid, y_pred[s, c], color="tab:red", linewidth=1.2, linestyle="--", label="predicted")
            style_axes(ax, f"target channel {c}: rel. L2 error {_rel_l2(y_true[s, c], y_pred[s, c]):.3f}")
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
            style_axes(ax, f"sample {s}: {name}")
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
    x = checked_array("x", x, (3, 4))
    y_true, y_pred = checked_array("y_true", y_true, (3, 4)), checked_array("y_pred", y_pred, (3, 4))
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} must have the same shape")
    if x.ndim != y_true.ndim or len(x) != len(y_true) or x.shape[2:] != y_true.shape[2:]:
        raise ValueError(f"x {x.shape} must match y_true {y_true.shape} in samples and grid (all but the channels)")
    if n < 1 or len(x) == 0:
        raise ValueError(f"n must be >= 1 and x must hold samples, got n={n} and {len(x)} samples")
    n = min(n, len(x))
    x, y_true, y_pred = (np.asarray(a[:n], dtype=float) for a in (x, y_true, y_pred))
    if x.ndim == 3:
        fig = new_figure(4.2 * (2 if y_true.shape[1] == 1 else 3), 0.6 + 2.5 * n)
        _fields_1d(fig, x, y_true, y_pred)
        kind = f"1-D fields, {y_true.shape[1]} target channel{'s' if y_true.shape[1] > 1 else ''}"
    else:
        fig = new_figure(13.0, 0.6 + 3.0 * n)
        _fields_2d(fig, x, y_true, y_pred)
        kind = f"2-D fields, channel 0 of {x.shape[1]} input / {y_true.shape[1]} target"
    fig.suptitle(f"Predictions on {n} test samples ({kind})", fontsize=TITLE)
    return figures.save_figure(fig, path)


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
    style_axes(ax, f"Bound terms of one run{note}", "bound term", "value")


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
        fig = new_figure(6.5, 4.5)
        _bound_bars(fig, rows[0])
        fig.suptitle("Generalisation bound report", fontsize=TITLE)
        return figures.save_figure(fig, path)
    error = np.array([r["test_error"] for r in rows], dtype=float)
    fig = new_figure(12.0, 5.5)
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
    style_axes(ax, f"bound value vs test error{_pearson(value, error)}", "bound/value", "test error")
    for i, (sub, term) in enumerate(zip(right.subplots(2, 2, sharey=True).flat, BOUND_TERMS, strict=True)):
        xs = np.array([r[term] for r in rows], dtype=float)
        sub.scatter(xs, error, s=14, color="tab:orange")
        sub.grid(alpha=0.3)
        style_axes(sub, f"{term}{_pearson(xs, error)}", term, "" if i % 2 else "test error")  # y is shared
    fig.suptitle("Generalisation bound against test error", fontsize=TITLE)
    return figures.save_figure(fig, path)
