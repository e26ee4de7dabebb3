"""Test-only fault injection: ``RECRAFT_FAULT`` makes this process SIGKILL itself at one point.

The crash/resume tests (``tests/reliability``) set it on a ``recraft run`` subprocess to kill the
run exactly where a real crash hurts most; nothing sets it otherwise, and unset it costs one
dictionary lookup per call. The value is ``TARGET:POINT[=N]``:

- ``align:step=3``, ``fit:step=3``: after optimiser step 3 of that training loop (its save, if
  step 3 is a checkpoint step, has happened).
- ``align:save=2``: inside the 2nd :meth:`TrainingCheckpoint.save` of ``checkpoints/align`` in
  this process, with the new state half written.
- ``fit:atomic_rename=2``: inside the 2nd :func:`atomic_dir` replacement of a directory named
  ``fit`` (``checkpoints/fit``), between its renames.
- ``source:start``: as ``recraft run`` starts the stage (the stages before it are finished).

Without ``=N``, the first time the point is reached.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

__all__ = ["ENV", "fault_point"]

ENV = "RECRAFT_FAULT"
_seen: Counter[tuple[str, str]] = Counter()


def fault_point(target: str, point: str, n: int | None = None) -> None:
    """SIGKILL this process if ``RECRAFT_FAULT`` names this point (test-only; see the module doc).

    Args:
        target: the stage (or checkpoint directory name) the point belongs to.
        point: ``step``, ``save``, ``atomic_rename`` or ``start``.
        n: the count to match (the step number); ``None`` counts this point's calls instead.
    """
    spec = os.environ.get(ENV)
    if not spec:
        return
    where, _, count = spec.partition("=")
    if where != f"{target}:{point}":
        return
    if n is None:
        _seen[target, point] += 1
        n = _seen[target, point]
    if n == int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)
