"""The methods compared in the benchmark: settings of one code path (DESIGN.md, "Baselines").

Every method runs the same stages; a method only decides whether the body starts pre-trained and
which objective stage 1 minimises. Stage 0 (the source cloud and head) runs for every method,
because the bound report of each run needs the frozen source predictor.
"""

from __future__ import annotations

from dataclasses import dataclass

from components.errors import UserError

__all__ = ["METHODS", "Method", "get_method"]


@dataclass(frozen=True)
class Method:
    """One row of the baselines table.

    Attributes:
        name: registry key (``params.yaml`` ``method``).
        pretrained: the body starts from the pre-trained weights (``False``: random init).
        objective: what stage 1 minimises over ``phi``: ``None`` (no stage 1), ``"fa"``
            (Sinkhorn divergence to the source cloud), ``"otdd"`` (ORCA's label-aware OTDD) or
            ``"recraft"`` (``lambda_fa * FA + lambda_fld * FLD``).
        summary: one line for ``recraft --help`` and the README.
    """

    name: str
    pretrained: bool
    objective: str | None
    summary: str


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("scratch", False, None, "random-init body, fresh embedder, train all"),
        Method("nft", True, None, "naive fine-tuning: pre-trained body, fresh embedder, train all"),
        Method("fa", True, "fa", "stage 1 minimises feature alignment (FA) only"),
        Method("orca", True, "otdd", "stage 1 minimises OTDD to the labelled source cloud (ORCA)"),
        Method("recraft", True, "recraft", "stage 1 minimises lambda_fa*FA + lambda_fld*FLD (RECRAFT)"),
    )
}


def get_method(name: str) -> Method:
    """The registered method ``name``; an unknown name raises a :class:`UserError` listing the choices."""
    try:
        return METHODS[name]
    except KeyError:
        raise UserError(f"unknown method {name!r}; choices: {', '.join(METHODS)}") from None
