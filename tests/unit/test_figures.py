"""flows.figures writes readable, non-blank PNGs and rejects mismatched inputs by argument name."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from matplotlib.text import Text

from flows import eval_figures, figures

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _assert_png(path: Path, min_side: int = 300, max_side: int = 2500) -> None:
    """A complete PNG of plausible size: signature, IHDR width/height (bytes 16-24), not blank."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert min_side <= width <= max_side and min_side <= height <= max_side, (width, height)
    assert len(data) > 5_000  # a blank canvas compresses to ~2 kB
    assert not list(path.parent.glob(f".{path.name}.*.tmp")), "temporary file left behind"


def _rows(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        fit, fa, fld, lip = rng.uniform(0.2, 1.0), rng.uniform(0, 0.5), rng.uniform(0, 0.3), rng.uniform(1, 3)
        value = fit + lip * fa + fld
        rows.append(
            {
                "bound/fit": fit,
                "bound/fa": fa,
                "bound/fld": fld,
                "bound/lipschitz": lip,
                "bound/value": value,
                "test_error": 0.2 * value + 0.02 * rng.normal(),
                "label": f"run{i}",
            }
        )
    return rows


@pytest.fixture
def embeddings():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 120)
    source = rng.normal(size=(300, 16))
    before = rng.normal(size=(120, 16)) + 5.0
    after = rng.normal(size=(120, 16)) + rng.normal(size=(4, 16))[labels]
    return source, before, after, labels


@pytest.fixture(autouse=True)
def drawn(monkeypatch):
    """Every figure saved during a test; afterwards, checks that none drew text below 9 pt."""
    saved = []
    original = figures.save_figure

    def capture(fig, path):
        saved.append(fig)
        return original(fig, path)

    monkeypatch.setattr(figures, "save_figure", capture)
    yield saved
    for fig in saved:
        small = [(t.get_text(), t.get_fontsize()) for t in fig.findobj(Text) if t.get_visible() and t.get_text()]
        assert min(size for _, size in small) >= 9, [item for item in small if item[1] < 9]


def test_alignment_projection_writes_png(tmp_path, embeddings):
    source, before, after, labels = embeddings
    out = figures.alignment_projection(source, before, after, labels, ["a", "b", "c", "d"], tmp_path / "a.png")
    assert out == tmp_path / "a.png"
    _assert_png(out)


def test_alignment_projection_many_pseudo_labels_uses_colorbar(tmp_path, embeddings):
    source, before, after, _ = embeddings
    labels = np.arange(len(before)) % 15
    out = figures.alignment_projection(source, before, after, labels, None, tmp_path / "p.png", "pseudo-label")
    _assert_png(out)


@pytest.mark.parametrize(
    ("change", "argument"),
    [
        (lambda s, b, a, y: (s, b, a, y[:-1]), "labels"),
        (lambda s, b, a, y: (s, b, a[:-1], y), "after"),
        (lambda s, b, a, y: (s[:, :-1], b, a, y), "source"),
        (lambda s, b, a, y: (s, b[0], a, y), "before"),
        (lambda s, b, a, y: (s, b, a, y - 1), "labels"),
    ],
)
def test_alignment_projection_rejects_mismatched_inputs(tmp_path, embeddings, change, argument):
    with pytest.raises(ValueError, match=argument):
        figures.alignment_projection(*change(*embeddings), None, tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def test_alignment_projection_rejects_too_few_class_names(tmp_path, embeddings):
    with pytest.raises(ValueError, match="class_names"):
        figures.alignment_projection(*embeddings, ["a", "b"], tmp_path / "bad.png")


def test_epoch_curves_one_panel_per_present_key(tmp_path, drawn):
    history = [{"train_loss": 2.0 / (i + 1), "val_accuracy": i / 10} for i in range(8)]
    out = figures.epoch_curves(history, ["train_loss", "val_loss", "val_accuracy"], tmp_path / "c.png", "fit")
    _assert_png(out)
    assert len(drawn[0].axes) == 2  # val_loss is absent from every record: skipped


def test_step_curves_draw_each_key_through_its_own_records(tmp_path, drawn):
    # training loss every 10 steps, validation at the end of each 30-step epoch
    steps = [{"step": s, "train_loss": 1.0 / s} for s in range(10, 61, 10)]
    evals = [{"step": s, "val_accuracy": s / 100} for s in (30, 60)]
    history = sorted(steps + evals, key=lambda r: r["step"])
    figures.epoch_curves(history, ["train_loss", "val_accuracy"], tmp_path / "s.png", "fit", x="step")
    train_ax, val_ax = drawn[0].axes
    assert list(train_ax.lines[0].get_xdata()) == [10, 20, 30, 40, 50, 60]
    assert list(val_ax.lines[0].get_xdata()) == [30, 60]
    assert list(val_ax.lines[0].get_ydata()) == [0.3, 0.6]


def test_epoch_curves_empty_history_draws_a_note(tmp_path, drawn):
    out = figures.epoch_curves([], ["fa", "fld"], tmp_path / "empty.png", "alignment")
    _assert_png(out, min_side=200)
    texts = [t.get_text() for t in drawn[0].findobj(Text)]
    assert "no epochs run (alignment skipped)" in texts


def test_epoch_curves_rejects_keys_absent_everywhere(tmp_path):
    with pytest.raises(ValueError, match="keys"):
        figures.epoch_curves([{"fa": 1.0}], ["loss"], tmp_path / "bad.png", "t")


def test_confusion_matrix_writes_png(tmp_path):
    counts = np.array([[50, 3, 1], [4, 40, 6], [0, 0, 0]])  # an empty true class must not divide by zero
    out = eval_figures.confusion_matrix(counts, ["airplane", "automobile", "bird"], tmp_path / "cm.png")
    _assert_png(out)


@pytest.mark.parametrize(
    ("counts", "names", "argument"),
    [
        (np.ones((2, 3), dtype=int), ["a", "b"], "counts"),
        (np.ones(3, dtype=int), ["a", "b", "c"], "counts"),
        (np.ones((3, 3), dtype=int), ["a", "b"], "class_names"),
        (-np.ones((2, 2), dtype=int), ["a", "b"], "counts"),
    ],
)
def test_confusion_matrix_rejects_bad_inputs(tmp_path, counts, names, argument):
    with pytest.raises(ValueError, match=argument):
        eval_figures.confusion_matrix(counts, names, tmp_path / "bad.png")


def test_field_predictions_1d_multichannel(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(4, 2, 64)), rng.normal(size=(4, 3, 64))
    out = eval_figures.field_predictions(x, y, y + 0.1 * rng.normal(size=y.shape), tmp_path / "f1.png", n=2)
    _assert_png(out)


def test_field_predictions_2d(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(2, 1, 16, 16)), rng.normal(size=(2, 1, 16, 16))
    out = eval_figures.field_predictions(x, y, y + 0.1, tmp_path / "f2.png", n=5)  # n is capped at N
    _assert_png(out)


@pytest.mark.parametrize(
    ("shapes", "argument"),
    [
        (((2, 1, 8), (2, 1, 8), (2, 1, 7)), "y_pred"),
        (((3, 1, 8), (2, 1, 8), (2, 1, 8)), "x"),
        (((2, 1, 8, 8), (2, 1, 8), (2, 1, 8)), "x"),
        (((2, 8), (2, 8), (2, 8)), "x"),
    ],
)
def test_field_predictions_rejects_mismatched_shapes(tmp_path, shapes, argument):
    x, y_true, y_pred = (np.zeros(s) for s in shapes)
    with pytest.raises(ValueError, match=argument):
        eval_figures.field_predictions(x, y_true, y_pred, tmp_path / "bad.png")


def test_bound_report_several_runs(tmp_path):
    _assert_png(eval_figures.bound_report(_rows(6), tmp_path / "b.png"))


def test_bound_report_single_run_is_a_bar_chart(tmp_path, drawn):
    out = eval_figures.bound_report(_rows(1), tmp_path / "b1.png")
    _assert_png(out)
    assert len(drawn[0].axes) == 1


def test_bound_report_rejects_missing_terms(tmp_path):
    rows = _rows(2)
    del rows[1]["bound/fld"]
    with pytest.raises(ValueError, match=r"rows\[1\].*bound/fld"):
        eval_figures.bound_report(rows, tmp_path / "bad.png")
    with pytest.raises(ValueError, match="rows"):
        eval_figures.bound_report([], tmp_path / "bad.png")
