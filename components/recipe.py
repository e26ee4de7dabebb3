"""What each stage computes, as plain functions: the one recipe the stages, tune's trials and the
bare-loop benchmark all call.

No orchestration or tracking here: a stage (flows/stages/NAME.py) wraps these calls in its Prefect flow,
writes their results and records them in MLflow; a tune trial (flows/tune.py) calls them on the
workspace's prepared data; ``benchmarks/bare_pipeline.py`` calls them with nothing around them.
The order of the random draws is part of the recipe: each starting point (:func:`new_embedder`,
:func:`new_model`) seeds the global generators first, so every caller trains the same weights on
CPU.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from components import assets as assets_lib
from components import bound
from components.align_loop import AlignReference, align_embedder
from components.bodies import load_body, load_tokenizer, masked_mean, resolve_body
from components.checkpoints import TrainingCheckpoint, load_checkpoint
from components.config import Params
from components.data import CLASSIFICATION, PreparedMeta, Split
from components.errors import UserError
from components.fit_loop import fit_model
from components.layout import Layout
from components.methods import get_method
from components.metrics import HIGHER_IS_BETTER, compute_metrics
from components.model import CrossModalModel, build_embedder, difference_stds, head_outputs
from components.reference import REFERENCE_TASK_TYPES, fit_ridge
from components.source import (
    SourceBatch,
    lipschitz_constants,
    load_reference,
    read_conll,
    sentence_labels,
    source_cloud,
    tokenize,
    train_source_head,
)
from components.spec import EmbedderSpec, ModelSpec
from components.tasks import check_raw, get_task, prepare_splits, resolve_task_type

__all__ = [
    "Job",
    "seed_everything",
    "prepare",
    "body",
    "train_source",
    "load_meta",
    "embedder_config",
    "new_embedder",
    "pooled_embeddings",
    "aligns",
    "align",
    "model_config",
    "linear_skip",
    "build_model",
    "new_model",
    "fit",
    "target_std",
    "bound_terms",
]


@dataclass(frozen=True)
class Job:
    """What the recipe computes with besides its inputs: the params, the workspace's layout (where
    earlier stages' outputs are read), the device, and how often to checkpoint and log."""

    params: Params
    layout: Layout
    device: torch.device
    checkpoint_every: int = 0
    log_every: int = 10


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


# ---------------------------------------------------------------- prepare


def prepare(params: Params, target_dir: Path) -> tuple[dict[str, Split], PreparedMeta]:
    """The task's train/val/test splits from its extracted files, and their meta.

    Validation is carved from training data with the run seed, stratified by class; a missing
    test split is carved first with the fixed ``data.split_seed``, so every run seed is judged
    on the same test set.
    """
    spec = get_task(params.task)
    raw = spec.loader(target_dir, params.data)
    spec = spec.resolved(resolve_task_type(spec, raw, params.data.task_type))
    task_type = spec.task_type
    check_raw(raw, spec.source, task_type)
    cfg = params.prepare
    splits, stats = prepare_splits(raw, spec, params.data, cfg, params.seed)
    classify = task_type in CLASSIFICATION
    train = splits["train"]
    n_classes = int(max(splits[n].y.max() for n in ("train", "val"))) + 1 if classify else 0
    class_names = list(raw.class_names) or [str(i) for i in range(n_classes)]
    target_shape = list(train.y.shape[1:])
    y_flat = train.y.reshape(len(train), -1).astype(np.float64)
    meta = PreparedMeta(
        task=params.task,
        task_type=task_type,
        metric=spec.metric,
        higher_is_better=HIGHER_IS_BETTER[spec.metric],
        source=spec.source,
        class_names=class_names if classify else [],
        n_classes=n_classes,
        n_out=head_outputs(task_type, target_shape, n_classes),
        input_shape=list(train.x.shape[1:]),
        target_shape=target_shape,
        masked=train.mask is not None,
        sizes={n: len(s) for n, s in splits.items()},
        group_counts={
            n: np.bincount(s.groups, minlength=max(n_classes, cfg.n_pseudo_labels)).tolist()
            for n, s in splits.items()
            if n != "test"  # test labels stay unread until evaluation
        },
        target_stats={"mean": y_flat.mean(0).tolist(), "std": np.maximum(y_flat.std(0), 1e-6).tolist()}
        if task_type == "regression"
        else None,
        normalisation={"applied": spec.normalise, **stats},
        # Spreads of the inputs and their differences (sequences): model.derivatives scales by them.
        difference_stds=difference_stds(train.x[:2000]) if train.x.ndim == 3 else None,
        augment_rc=spec.augment_rc,
    )
    return splits, meta


def load_meta(layout: Layout) -> PreparedMeta:
    return PreparedMeta.read(layout.prepared_dir / "meta.json")


# ---------------------------------------------------------------- source (stage 0)


def body(job: Job, pretrained: bool = True):
    """The body: the pinned pre-trained weights, or (``pretrained=False``) the same architecture
    randomly initialised from the global torch RNG (method ``scratch``)."""
    spec = resolve_body(job.params.model.body)
    if spec.asset is not None:
        assets_lib.verify_tree(job.layout.body_dir, spec.asset)  # the weights are the pinned ones, unaltered
    path = job.layout.body_dir if spec.asset is not None else job.params.model.body
    return load_body(path, n_layers=job.params.model.n_layers, pretrained=pretrained)


def train_source(job: Job) -> dict:
    """Stage 0: the source cloud (the body's pooled features of ``source.n_source`` sentences) and
    the Lipschitz-regularised source head; its training history and Lipschitz constants."""
    params = job.params
    cfg = params.source
    net = body(job)
    tokenizer = load_tokenizer(job.layout.body_dir if resolve_body(params.model.body).asset else params.model.body)
    assets_lib.verify_tree(job.layout.corpus_dir, "wnut16")
    sentences = read_conll(job.layout.corpus_dir / "ner.txt")
    labels, classes = sentence_labels(sentences)
    rng = np.random.default_rng(params.seed)
    order = rng.permutation(len(sentences))[: cfg.n_source]
    batch = tokenize(tokenizer, [sentences[i] for i in order], labels[order], cfg.max_tokens)
    cloud = source_cloud(net, batch)  # (n, d): all selected sentences form the cloud
    n_val = max(1, int(round(len(order) * cfg.val_fraction)))

    def part(sl: slice) -> SourceBatch:
        return SourceBatch(batch.input_ids[sl], batch.mask[sl], batch.labels[sl])

    train_b, val_b = part(slice(n_val, None)), part(slice(0, n_val))
    head, history = train_source_head(net, train_b, val_b, len(classes), cfg, params.seed)
    lipschitz = lipschitz_constants(net, head, val_b)
    return {
        "cloud": cloud,
        "labels": batch.labels,
        "head": head,
        "history": history,
        "classes": classes,
        "lipschitz": lipschitz,
    }


# ---------------------------------------------------------------- align (stage 1)


def embedder_config(params: Params, meta: PreparedMeta, d: int, meta_path: Path | None = None) -> EmbedderSpec:
    """``phi``'s config for the prepared task (``meta``) and a body of width ``d``."""
    m = params.model
    scales = None
    if m.derivatives:
        if len(meta.input_shape) != 2:
            raise UserError(
                f"model.derivatives={m.derivatives}: differences apply to sequences; task "
                f"{params.task!r} has inputs of shape {meta.input_shape}",
                hint="set model.derivatives: 0 for this task",
            )
        if not meta.difference_stds:
            raise UserError(
                f"{meta_path or 'meta.json'} has no difference_stds (prepared by an older version)",
                hint="re-run the prepare stage",
            )
        scales = tuple(meta.difference_stds[: m.derivatives + 1])
    return EmbedderSpec(
        input_shape=tuple(meta.input_shape),
        d=d,
        max_tokens=m.max_tokens,
        overlap=m.overlap,
        motif_kernel=m.motif_kernel,
        derivatives=m.derivatives,
        difference_scales=scales,
        init=m.embedder_init,
        body=m.body,
        task=params.task,
    )


def new_embedder(job: Job, meta: PreparedMeta) -> tuple:
    """Stage 1's starting point, seeded: a fresh ``phi``, the body, ``phi``'s config and the
    stage-0 reference (whose head, built here, also draws from the global generator)."""
    seed_everything(job.params.seed)
    net = body(job, pretrained=get_method(job.params.method).pretrained)
    cfg = embedder_config(job.params, meta, net.hidden_size, job.layout.prepared_dir / "meta.json")
    embedder = build_embedder(cfg, net)
    return embedder, net, cfg, load_reference(job.layout)


@torch.no_grad()
def pooled_embeddings(embedder, split: Split, n: int = 500) -> np.ndarray:
    """Masked mean of ``phi(x)`` for the first ``n`` samples: the points FA compares to the cloud."""
    x = torch.from_numpy(split.x[:n])
    mask = None if split.mask is None else torch.from_numpy(split.mask[:n])
    was_training = embedder.training
    embedder.eval()
    out = masked_mean(embedder(x, mask), embedder.token_mask(mask)).float().numpy()
    embedder.train(was_training)
    return out


def aligns(params: Params) -> bool:
    """Whether stage 1 trains at all (the method has an objective and ``align.epochs`` > 0)."""
    return get_method(params.method).objective is not None and params.align.epochs > 0


def align(
    job: Job,
    embedder,
    net,
    ref: AlignReference,
    train: Split,
    on_epoch=None,
    checkpoint: TrainingCheckpoint | None = None,
    on_step=None,
) -> list[dict[str, float]]:
    """Stage 1: train ``phi`` on the method's objective (body and source head frozen); the
    per-epoch history."""
    device = job.device
    callbacks = {k: v for k, v in (("on_epoch", on_epoch), ("on_step", on_step)) if v is not None}
    return align_embedder(
        embedder.to(device),
        net.to(device),
        AlignReference(ref.cloud, ref.head.to(device), ref.labels),
        torch.from_numpy(train.x),
        torch.from_numpy(train.groups),
        job.params.align,
        job.params.seed,
        device,
        mask=None if train.mask is None else torch.from_numpy(train.mask),
        checkpoint=checkpoint,
        checkpoint_every=job.checkpoint_every,
        objective=get_method(job.params.method).objective,
        **callbacks,
    )


# ---------------------------------------------------------------- fit (stage 2)


def linear_skip(params: Params, meta: PreparedMeta) -> bool:
    """Whether the model adds a ridge map (``model.linear_skip``, real-valued targets only)."""
    return params.model.linear_skip and meta.task_type in REFERENCE_TASK_TYPES


def model_config(params: Params, meta: PreparedMeta, d: int) -> ModelSpec:
    """The fitted model's spec (its ``config.json``), for a body of width ``d``."""
    return ModelSpec(
        task=params.task,
        task_type=meta.task_type,
        n_out=meta.n_out,
        embedder=embedder_config(params, meta, d),
        target_shape=tuple(meta.target_shape),
        masked=meta.masked,
        n_layers=params.model.n_layers,
        linear_skip=linear_skip(params, meta),
    )


def _assemble(embedder, net, meta: PreparedMeta, skip: bool = False) -> CrossModalModel:
    """``phi + g`` with a fresh head for the prepared task, holding its regression target stats."""
    model = CrossModalModel(embedder, net, meta.n_out, meta.task_type, tuple(meta.target_shape), linear_skip=skip)
    if meta.target_stats is not None:
        model.target_mean.copy_(torch.tensor(meta.target_stats["mean"]))
        model.target_std.copy_(torch.tensor(meta.target_stats["std"]))
    return model


def build_model(
    job: Job, meta: PreparedMeta, embedder_state: dict | None = None, skip: bool | None = None
) -> CrossModalModel:
    """The stage-2 model: ``phi`` from the align stage (or ``embedder_state``), the body
    (pre-trained unless the method is ``scratch``), a fresh head; a linear skip as the params
    say, or as ``skip`` says (a saved model's own config)."""
    params = job.params
    net = body(job, pretrained=get_method(params.method).pretrained)
    cfg = embedder_config(params, meta, net.hidden_size, job.layout.prepared_dir / "meta.json")
    embedder = build_embedder(cfg, net)
    if embedder_state is None:
        load_checkpoint(job.layout.embedder_dir, embedder, {"kind": "target_embedder", "task": params.task})
    else:
        embedder.load_state_dict(embedder_state, strict=True)
    return _assemble(embedder, net, meta, linear_skip(params, meta) if skip is None else skip)


def new_model(
    job: Job, meta: PreparedMeta, train: Split, val: Split, embedder_state: dict | None = None
) -> CrossModalModel:
    """Stage 2's starting point, seeded (the fit stage, its replicas and tune's trials).

    With a linear skip, the ridge map of ``train`` (penalty chosen on ``val``) is fitted here:
    the model starts as that map.
    """
    seed_everything(job.params.seed)
    model = build_model(job, meta, embedder_state)
    if model.skip is not None:
        model.skip.set_map(fit_ridge(train.x, train.y, val.x, val.y, meta.task_type, meta.metric, train.mask, val.mask))
    return model


def fit(
    job: Job, model, train: Split, val: Split, meta: PreparedMeta, checkpoint: TrainingCheckpoint | None, **callbacks
):
    """Stage 2: fine-tune ``phi + g + h_t`` with early stopping on validation data (every rank
    of a data-parallel fit alike); the best model and the per-epoch history."""
    params = job.params
    return fit_model(
        model,
        train,
        val,
        params.fit,
        meta.metric,
        params.seed,
        job.device,
        augment_rc=params.fit.augment_rc and meta.augment_rc,
        checkpoint=checkpoint,
        checkpoint_every=job.checkpoint_every,
        log_every=job.log_every,
        **callbacks,
    )


# ---------------------------------------------------------------- evaluate


def target_std(meta: PreparedMeta) -> np.ndarray | None:
    return None if meta.target_stats is None else np.asarray(meta.target_stats["std"])


def bound_terms(
    job: Job, model: CrossModalModel, val: Split, meta: PreparedMeta, val_scores: np.ndarray
) -> dict[str, float]:
    """The bound's terms of the fine-tuned model on validation data (:func:`components.bound.bound_terms`)."""
    device = job.device
    ref = load_reference(job.layout)
    source_summary = json.loads((job.layout.source_dir / "summary.json").read_text())
    pretrained = body(job).to(device).eval()  # p_s is the frozen source predictor of stage 0
    mask = None if val.mask is None else torch.from_numpy(val.mask).to(device)
    return bound.bound_terms(
        model.embedder,
        pretrained,
        AlignReference(ref.cloud.to(device), ref.head.to(device)),
        torch.from_numpy(val.x).to(device),
        torch.from_numpy(val.groups).to(device),
        mask,
        job.params.align,
        compute_metrics(meta.task_type, val_scores, val.y, target_std(meta))["loss"],
        source_summary["lipschitz"],
    )
