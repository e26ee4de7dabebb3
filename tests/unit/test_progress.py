"""Progress bars: drawn for a person at a terminal, silent in pipes, logs and CI."""

from __future__ import annotations

import io
import sys

from components.align_loop import align_steps
from components.config import AlignParams, FitParams
from components.fit_loop import fit_steps
from flows.progress import bars_enabled, step_progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_no_bar_without_a_terminal(capsys):
    assert not bars_enabled()  # pytest captures stderr: not a terminal
    with step_progress("fit", 10) as on_step:
        on_step(3)
    assert capsys.readouterr().err == ""


def test_bar_on_a_terminal_and_none_in_ci(monkeypatch):
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.delenv("CI", raising=False)
    assert bars_enabled()
    with step_progress("align", 4) as on_step:
        for step in range(1, 5):
            on_step(step)
    assert "align" in terminal.getvalue()
    monkeypatch.setenv("CI", "true")
    assert not bars_enabled()
    monkeypatch.setenv("CI", "false")
    assert bars_enabled()


def test_step_totals_follow_the_loops_budgets():
    assert align_steps(100, AlignParams(batch_size=32, steps_per_epoch=None, epochs=3)) == (3, 3)
    assert align_steps(100, AlignParams(batch_size=32, steps_per_epoch=2, epochs=3)) == (2, 3)
    assert fit_steps(100, FitParams(batch_size=32, epochs=1, min_steps=10)) == (4, 3)
    assert fit_steps(100, FitParams(batch_size=32, epochs=5, min_steps=0)) == (4, 5)
