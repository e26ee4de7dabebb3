"""A tiny align + fit job run as a subprocess by test_resume.py, which kills it with the
test-only ``RECRAFT_FAULT`` hook (:mod:`components.faults`), e.g. ``fit:save=3``.

    RECRAFT_FAULT=align:step=3 python -m tests.reliability.resume_worker WORKDIR

Like the pipeline's stages, each stage keeps its checkpoint in ``WORKDIR/<stage>`` (so fault
targets read as in ``recraft run``), writes its output atomically and then drops the checkpoint;
a re-run skips a finished align and resumes an unfinished stage. The result (histories and the
sha256 of the final weights) goes to WORKDIR/result.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import torch

from components.align_loop import AlignReference, align_embedder
from components.checkpoints import TrainingCheckpoint, load_tensors, save_tensors
from components.config import AlignParams, FitParams
from components.data import Split
from components.fit_loop import fit_model
from components.model import CrossModalModel
from tests.conftest import build_tiny_body
from tests.model.test_learning import _embedder, _motif_task

ALIGN = AlignParams(epochs=3, steps_per_epoch=3, batch_size=32, eps=1.0)
FIT = FitParams(epochs=3, min_steps=0, batch_size=32, patience=3, augment_rc=True)
EVERY = 2  # checkpoint every 2 steps, so kills land both on and between checkpoints
LOG_EVERY = 3  # the step curve's windows straddle checkpoints


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir", type=Path)
    args = parser.parse_args()
    work = args.workdir
    torch.manual_seed(0)
    body = build_tiny_body(n_layers=1)
    g = torch.Generator().manual_seed(0)
    ref = AlignReference(torch.randn(100, 32, generator=g), torch.nn.Linear(32, 4))
    x, y = _motif_task(160, seed=7)
    xv, yv = _motif_task(64, seed=8)
    embedder = _embedder(body, seed=1, motif_kernel=5)
    emb_file = work / "embedder.safetensors"
    if emb_file.exists():
        embedder.load_state_dict(load_tensors(emb_file))
        align_history = json.loads((work / "align.json").read_text())
    else:
        ckpt = TrainingCheckpoint(work / "align", "align-v1")
        align_history = align_embedder(
            embedder,
            body,
            ref,
            torch.from_numpy(x),
            torch.from_numpy(y),
            ALIGN,
            seed=3,
            device=torch.device("cpu"),
            checkpoint=ckpt,
            checkpoint_every=EVERY,
        )
        (work / "align.json").write_text(json.dumps(align_history))
        save_tensors(emb_file, embedder.state_dict())
        ckpt.clear()
    torch.manual_seed(3)
    model = CrossModalModel(embedder, body, 2, "binary")
    ckpt = TrainingCheckpoint(work / "fit", "fit-v1")
    curve: list[dict] = []  # what a resumed run replays plus what it logs: the whole curve
    model, fit_history = fit_model(
        model,
        Split(x, y),
        Split(xv, yv),
        FIT,
        "accuracy",
        seed=3,
        device=torch.device("cpu"),
        augment_rc=True,
        checkpoint=ckpt,
        checkpoint_every=EVERY,
        log_every=LOG_EVERY,
        on_log=lambda step, record: curve.append({"step": step, **record}),
    )
    digest = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(value.detach().contiguous().numpy().tobytes())
    result = {"align": align_history, "fit": fit_history, "curve": curve, "weights_sha256": digest.hexdigest()}
    (work / "result.json").write_text(json.dumps(result, sort_keys=True))
    ckpt.clear()


if __name__ == "__main__":
    main()
