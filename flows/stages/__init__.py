"""The pipeline's stages, one module each: assets -> prepare -> source -> tune -> align -> fit -> evaluate.

``flows/stages/NAME.py`` holds stage NAME's Prefect flow, also called NAME. It reads the outputs
of earlier stages from the workspace :class:`~components.layout.Layout`, calls the pure recipe
(components/recipe.py), writes only its own outputs (atomically) and records a child MLflow run.
``dvc repro`` runs one stage per process (``recraft stage NAME``), which imports that stage's
module alone; ``recraft run`` runs them all in one flow.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from components.layout import ORDER
from flows.stages.context import StageContext, make_context

__all__ = ["StageContext", "make_context", "stage_flow"]


def stage_flow(name: str) -> Callable[..., dict]:
    """The flow of stage ``name`` (one of :data:`~components.layout.ORDER`), imported on demand."""
    if name not in ORDER:
        raise ValueError(f"unknown stage {name!r}; stages: {', '.join(ORDER)}")
    return getattr(importlib.import_module(f"flows.stages.{name}"), name)
