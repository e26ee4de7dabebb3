"""Typed, frozen configuration: the schema of ``params.yaml``.

Every key is documented here, once, next to its validation. Unknown keys, wrong types and
out-of-range values are refused with a message that names the key. The YAML file is read at the
flow edge (``flows.params``); components receive these frozen models or plain values.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "ModelParams",
    "DataParams",
    "PrepareParams",
    "SourceParams",
    "AlignParams",
    "FitParams",
    "TuneParams",
    "Params",
    "PER_TASK_SECTIONS",
    "PER_TASK_FIXED",
    "per_task_problem",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelParams(_Section):
    body: str = Field("minilm-l6", description="registered body name, a Hugging Face id, or a local folder")

    @field_validator("body")
    @classmethod
    def _known_body(cls, value: str) -> str:
        from components.bodies import resolve_body
        from components.errors import UserError

        try:
            resolve_body(value)
        except UserError as exc:  # re-raised as a validation error so the message names the key
            raise ValueError(str(exc)) from exc  # its hint travels as the cause
        return value

    max_tokens: int = Field(10, ge=1, le=512, description="upper bound on target tokens; sets the patch stride")
    overlap: int = Field(2, ge=1, le=4, description="strided embedder: kernel = overlap x stride (1: ORCA's)")
    motif_kernel: int | None = Field(
        9, ge=1, le=64, description="stride-1 conv of this width + max-pool per patch (None: strided patching)"
    )
    n_layers: int | None = Field(None, ge=1, description="keep only the first n body layers (None: all)")
    derivatives: int = Field(
        0,
        ge=0,
        le=2,
        description="sequences: phi also reads the 1st..k-th finite differences along L (each scaled to the "
        "spread of the training inputs); spectra, whose information is in the shape of the bands, use 2",
    )
    embedder_init: Literal["body", "fresh"] = Field(
        "body",
        description="body: phi = LayerNorm(conv + pos) with the body's embedding LayerNorm and positions "
        "copied in (as the released codes); fresh: LayerNorm(conv) + pos with a fresh LayerNorm",
    )

    linear_skip: bool = Field(
        True,
        description="fields and regression: add the ridge map fitted on the training split (penalty chosen "
        "on validation) to the model's output, so the body learns what a linear map cannot; "
        "ignored by classification tasks",
    )


class DataParams(_Section):
    task_type: Literal["binary", "multiclass", "multilabel", "regression", "field"] | None = Field(
        None, description="user data: override the task type inferred from y (must agree with a registered task)"
    )
    test_fraction: float = Field(
        0.2, gt=0.0, lt=0.9, description="share held out as test when a source ships no test split"
    )
    split_seed: int = Field(
        0, ge=0, description="seeds that test carve-out: fixed, so every run seed sees one test set"
    )
    n_samples: int = Field(1000, ge=10, description="generated PDE tasks: number of initial conditions")
    resolution: int = Field(128, ge=8, le=8192, description="generated PDE tasks: grid cells in x")
    generator_seed: int = Field(0, ge=0, description="generated PDE tasks: seed of the random initial conditions")
    t_final: float | None = Field(
        None,
        gt=0.0,
        description="generated PDE tasks: time of the last predicted snapshot (None: the task's default, "
        "advection 2.0 as PDEBench; diffusion_reaction 0.1, since at nu=0.5 the field is flat by t~0.5)",
    )
    n_snapshots: int = Field(
        1, ge=1, le=64, description="PDE tasks (generated, PDEBench files): solution snapshots to predict"
    )


class PrepareParams(_Section):
    val_fraction: float = Field(0.1, gt=0.0, lt=0.5, description="share of training data held out for validation")
    max_train: int | None = Field(None, ge=2, description="subsample the training split to this many samples")
    max_test: int | None = Field(None, ge=2, description="subsample the test split (tests and smoke runs)")
    n_pseudo_labels: int = Field(10, ge=2, description="k of k-means pseudo-labels for non-classification tasks")


class SourceParams(_Section):
    n_source: int = Field(5000, ge=10, description="at most this many source sentences form the cloud")
    max_tokens: int = Field(32, ge=4, le=512, description="source sentences are truncated to this many tokens")
    val_fraction: float = Field(0.1, gt=0.0, lt=0.5, description="source sentences held out to report h_s accuracy")
    epochs: int = Field(60, ge=1, description="source-head epochs")
    hinge_epochs: int = Field(1, ge=0, description="last epochs that add the Lipschitz hinge (paper: epochs/2)")
    hinge_steps: int | None = Field(2, ge=1, description="minibatches per hinge epoch (None: full epochs)")
    lr: float = Field(3e-3, gt=0.0, description="source-head AdamW learning rate")
    batch_size: int = Field(64, ge=1)
    tau: float | None = Field(
        None,
        ge=0.0,
        description="Lipschitz hinge threshold on ||grad_u loss_i|| (None: calibrated, the tau_quantile "
        "quantile of the norms measured when the hinge starts; the paper's 0.4 is never reached on MiniLM)",
    )
    tau_quantile: float = Field(0.5, gt=0.0, lt=1.0, description="quantile of measured norms that sets tau")
    rho: float = Field(100.0, ge=0.0, description="Lipschitz hinge weight")
    balanced: bool = Field(True, description="class-balanced cross-entropy for h_s")

    @model_validator(mode="after")
    def _hinge_within_epochs(self) -> SourceParams:
        if self.hinge_epochs > self.epochs:
            raise ValueError(f"source.hinge_epochs={self.hinge_epochs} exceeds source.epochs={self.epochs}")
        return self


class AlignParams(_Section):
    schedule: Literal["joint", "sequential"] = Field(
        "joint", description="joint: weighted sum each step; sequential: FA epochs then FLD epochs"
    )
    fld_variant: Literal["ce", "mi"] = Field(
        "ce",
        description="FLD as conditional entropy (ce: the bound's own term, the released code's choice) or -MI "
        "(mi: also spreads target classes over source classes; near 0 when h_s cannot tell them apart)",
    )
    balance: Literal["unit", "first"] = Field(
        "unit",
        description="joint steps: each term's gradient divided by its own norm every step (unit: the terms "
        "pull equally throughout) or by its norm at the first step (first: a term that has been minimised "
        "stops pulling)",
    )
    lambda_fa: float = Field(1.0, ge=0.0, description="weight of feature alignment")
    lambda_fld: float = Field(1.0, ge=0.0, description="weight of feature-label distortion")
    eps: float = Field(0.1, gt=0.0, description="Sinkhorn entropic regularisation")
    sinkhorn_iters: int = Field(200, ge=1, description="Sinkhorn iteration cap")
    epochs: int = Field(6, ge=0, description="stage-1 epochs (0 skips alignment)")
    steps_per_epoch: int | None = Field(
        10, ge=1, description="cap on steps per epoch (None: full passes); 6 x 10 = the released codes' ~60 steps"
    )
    lr: float = Field(1e-3, gt=0.0, description="AdamW learning rate of phi in stage 1")
    batch_size: int = Field(64, ge=2, description="stage-1 batch without per_class; FA/FLD report batches")
    per_class: int | None = Field(
        64,
        ge=2,
        description="stage-1 steps draw this many samples of every class or pseudo-label "
        "(all of a smaller class), so FLD and OTDD's class Gaussians see each class; None: shuffled batches",
    )


class FitParams(_Section):
    epochs: int = Field(
        2,
        ge=1,
        description="stage-2 epochs (at least; see min_steps); 2: dna val accuracy 0.950, 0.956, 0.964 "
        "on seeds 0-2 vs 0.913, 0.915, 0.906 at 1; the default dvc repro still fits in 5 minutes (289 s)",
    )
    min_steps: int = Field(
        100, ge=0, description="run more epochs when needed to reach this many optimiser steps (small datasets)"
    )
    lr: float = Field(1e-4, gt=0.0, description="AdamW learning rate of the body")
    head_lr: float = Field(6e-3, gt=0.0, description="AdamW learning rate of the target head h_t")
    embedder_lr: float | None = Field(
        1e-3,
        gt=0.0,
        description="AdamW learning rate of phi in stage 2 (None: fit.lr, one rate as the released codes); "
        "default 10x fit.lr: val accuracy 0.908 vs 0.860 at fit.lr on dna, and align/fa kept after stage 2",
    )
    weight_decay: float = Field(0.01, ge=0.0)
    warmup_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="share of steps with linear LR warm-up")
    grad_clip: float | None = Field(1.0, gt=0.0, description="clip the global gradient norm (None: off)")
    batch_size: int = Field(64, ge=1)
    balanced: bool = Field(
        True, description="classification: weight each class by 1/frequency in the loss (imbalanced tasks, e.g. ecg)"
    )
    patience: int = Field(10, ge=1, description="epochs without validation improvement before stopping")
    freeze_embedder: bool = Field(False, description="keep phi fixed in stage 2, as the paper's figure draws it")
    augment_rc: bool = Field(True, description="DNA only: random reverse-complement augmentation")


class TuneParams(_Section):
    """The Optuna search (``tune`` stage, ``recraft tune``): budget, pruning and the space.

    Ranges are ``[low, high]``; ``lambda_*``, ``eps`` and the learning rates are searched on a
    log scale. A range set to ``null`` is not searched (the value of its own section is used).
    """

    n_trials: int = Field(12, ge=1, description="trials in the study (a rerun continues it up to this many)")
    n_workers: int = Field(
        1, ge=1, le=64, description="processes sharing the study's storage (1 on a 2-core machine: torch uses both)"
    )
    target: Literal["val", "bound"] = Field(
        "val", description="val: the task's validation metric; bound: the bound value (label-free selection)"
    )
    pruner: Literal["median", "hyperband", "none"] = Field("median", description="per-epoch pruning of bad trials")
    sampler_seed: int = Field(0, ge=0, description="seed of the TPE sampler")
    max_train: int | None = Field(
        640, ge=2, description="per-trial budget: training samples used by each trial (None: all)"
    )
    fit_epochs: int = Field(2, ge=1, description="per-trial budget: stage-2 epochs (each reports to the pruner)")
    confirm_top: int = Field(
        1,
        ge=0,
        le=20,
        description="the best N trials and the baseline re-run at the full budget (as the pipeline runs them); "
        "the best of those on validation data is written (0: the budgeted best, unconfirmed)",
    )
    lambda_fa: tuple[float, float] | None = Field((0.1, 10.0), description="range of align.lambda_fa (log)")
    lambda_fld: tuple[float, float] | None = Field((0.1, 10.0), description="range of align.lambda_fld (log)")
    eps: tuple[float, float] | None = Field((0.05, 1.0), description="range of align.eps (log)")
    tau: tuple[float, float] | None = Field(
        None, description="range of source.tau; each trial re-trains the source head (costs a stage 0)"
    )
    fld_variant: tuple[Literal["ce", "mi"], ...] | None = Field(
        ("ce", "mi"), description="choices of align.fld_variant"
    )
    schedule: tuple[Literal["joint", "sequential"], ...] | None = Field(
        ("joint", "sequential"), description="choices of align.schedule"
    )
    align_epochs: tuple[int, int] | None = Field((1, 4), description="range of align.epochs")
    align_lr: tuple[float, float] | None = Field((1e-4, 1e-2), description="range of align.lr (log)")
    fit_lr: tuple[float, float] | None = Field((3e-5, 3e-4), description="range of fit.lr (log)")

    @model_validator(mode="after")
    def _ranges_ordered(self) -> TuneParams:
        for name in ("lambda_fa", "lambda_fld", "eps", "tau", "align_epochs", "align_lr", "fit_lr"):
            rng = getattr(self, name)
            if rng is not None and not 0 <= rng[0] <= rng[1]:
                raise ValueError(f"tune.{name}: expected [low, high] with 0 <= low <= high, got {list(rng)}")
            if rng is not None and name not in ("tau", "align_epochs") and rng[0] <= 0:
                raise ValueError(f"tune.{name}: a log-scale range needs low > 0, got {list(rng)}")
        for name in ("fld_variant", "schedule"):
            if getattr(self, name) is not None and not getattr(self, name):
                raise ValueError(f"tune.{name}: give at least one choice, or null to not search it")
        return self


class Params(_Section):
    task: str = Field("dna", description="registered task name, npz:PATH or pdebench:PATH (recraft tasks)")
    method: str = Field(
        "recraft", description="scratch, nft, fa, orca or recraft (components/methods.py; recraft --help)"
    )
    seed: int = Field(0, ge=0, description="seeds splits, initialisation and batch order")
    model: ModelParams = ModelParams()
    data: DataParams = DataParams()
    prepare: PrepareParams = PrepareParams()
    source: SourceParams = SourceParams()
    align: AlignParams = AlignParams()
    fit: FitParams = FitParams()
    tune: TuneParams = TuneParams()
    use_tuned: bool = Field(
        False, description="align/fit/source read the best values of the last search (params.tuned.yaml)"
    )
    per_task: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {
            "tecator": {
                "model.derivatives": 2,
                "model.linear_skip": False,
                "fit.lr": 3e-4,
                "fit.min_steps": 400,
                "fit.patience": 20,
            }
        },
        description="values for one task: when `task` names an entry, its `section.key` values replace the "
        "sections' (model and fit keys, except model.body and model.n_layers); a --set of the same key wins",
    )

    @field_validator("per_task")
    @classmethod
    def _per_task_keys(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for task, entry in value.items():
            for dotted in entry:
                problem = per_task_problem(dotted)
                if problem:
                    raise ValueError(f"per_task.{task}: {problem}")
        return value

    @field_validator("method")
    @classmethod
    def _registered_method(cls, value: str) -> str:
        from components.errors import UserError
        from components.methods import get_method

        try:
            get_method(value)
        except UserError as exc:
            raise ValueError(str(exc)) from exc  # its hint travels as the cause
        return value

    @field_validator("task")
    @classmethod
    def _registered_task(cls, value: str) -> str:
        from components.errors import UserError
        from components.tasks import get_task

        try:
            get_task(value)
        except UserError as exc:  # re-raised as a validation error so the message names the key
            raise ValueError(str(exc)) from exc  # its hint travels as the cause
        return value


#: The sections a ``per_task`` entry may set, and the keys it may not (they decide shared stages).
PER_TASK_SECTIONS = {"model": ModelParams, "fit": FitParams}
PER_TASK_FIXED = ("model.body", "model.n_layers")


def per_task_problem(dotted: str) -> str | None:
    """What is wrong with ``dotted`` as a ``per_task`` key, or ``None`` if it is one."""
    section, _, key = dotted.partition(".")
    if section not in PER_TASK_SECTIONS or key not in PER_TASK_SECTIONS[section].model_fields:
        return f"{dotted!r} is not a key of {' or '.join(PER_TASK_SECTIONS)} (expected section.key, e.g. fit.lr)"
    if dotted in PER_TASK_FIXED:
        return f"{dotted!r} cannot differ per task (the assets and source stages are shared)"
    return None


_HEADER = """\
# Every value that changes a result. The schema, with each key's meaning and valid range, is
# components/config.py (one place); unknown keys and bad values are refused before any compute.
# This file is the schema's defaults, written by `python -m components.config > params.yaml`
# (a test checks that they agree): change a default there, then rewrite this file.
"""
_PER_TASK_NOTE = """\
# Values for one task: when `task` names an entry, its section.key values replace the ones above
# (model and fit keys only; a --set of the same key wins). Chosen on validation data (docs/tasks.md).
"""


def defaults_yaml() -> str:
    """``params.yaml`` as the defaults above give it: top-level values, then each section, then
    ``per_task``. Floats are written so that YAML 1.1 reads them back as floats (``3.0e-05``)."""
    raw = Params().model_dump(mode="json")
    sections = {k: v for k, v in raw.items() if isinstance(v, dict) and k != "per_task"}
    lines = [f"{k}: {_yaml_value(v)}" for k, v in raw.items() if k not in sections and k != "per_task"]
    for name, values in sections.items():
        lines += ["", f"{name}:", *(f"  {k}: {_yaml_value(v)}" for k, v in values.items())]
    lines += ["", *_PER_TASK_NOTE.splitlines(), "per_task:"]
    for task, entry in raw["per_task"].items():
        lines += [f"  {task}:", *(f"    {k}: {_yaml_value(v)}" for k, v in entry.items())]
    return _HEADER + "\n".join(lines) + "\n"


def _yaml_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = repr(value)
        mantissa, e, exponent = text.partition("e")
        return f"{mantissa}.0e{exponent}" if e and "." not in mantissa else text
    if isinstance(value, list):
        return "[" + ", ".join(_yaml_value(v) for v in value) + "]"
    text = str(value)
    plain = re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.\-/]*", text) and text.lower() not in _YAML_WORDS
    return text if plain or not isinstance(value, str) else json.dumps(text)


# Plain words YAML 1.1 reads as something other than a string.
_YAML_WORDS = {"null", "true", "false", "yes", "no", "on", "off", "y", "n"}


if __name__ == "__main__":
    print(defaults_yaml(), end="")
