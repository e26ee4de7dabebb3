"""Data-parallel stage 2: two gloo ranks on one global batch train the same model as one process.

Dropout is off here so that the comparison is exact up to float summation order; the batches
are uneven (the last one is smaller than the others), the loss is class-weighted and the DNA
reverse-complement augmentation draws from the loop's generator, so the sharding, the loss
weights and the shared random stream are all exercised.
"""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from components.config import FitParams
from components.data import Split
from components.errors import UserError
from components.fit_loop import fit_model
from components.model import CrossModalModel, SequenceEmbedder
from tests.conftest import build_tiny_body

CFG = FitParams(epochs=2, min_steps=0, batch_size=24, lr=1e-3, head_lr=3e-3, patience=5, balanced=True)


def _data(n: int, seed: int) -> Split:
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, 4, size=(n, 40))
    y = (rng.random(n) < 0.3).astype(np.int64)  # imbalanced: class weights differ from 1
    idx[y == 1, 5:11] = [0, 1, 2, 3, 0, 1]
    x = np.zeros((n, 4, 40), dtype=np.float32)
    x[np.arange(n)[:, None], idx, np.arange(40)[None, :]] = 1.0
    return Split(x, y)


def _train() -> tuple[dict[str, torch.Tensor], list[dict[str, float]]]:
    body = build_tiny_body(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(1)
    embedder = SequenceEmbedder(4, 40, body.hidden_size, 8, body.position_embeddings, overlap=2)
    torch.manual_seed(2)
    model = CrossModalModel(embedder, body, 2, "binary")
    model, history = fit_model(
        model, _data(100, 0), _data(60, 1), CFG, "accuracy", seed=0, device=torch.device("cpu"), augment_rc=True
    )
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, history


def _rank(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        state, history = _train()
        torch.save({"state": state, "history": history}, os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_ranks_match_one_process_on_the_same_global_batch(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single_state, single_history = _train()
    finally:
        torch.set_num_threads(threads)
    mp.spawn(_rank, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]

    # The replicas stay identical, and equal to the single process.
    for name, value in single_state.items():
        assert torch.equal(ranks[0]["state"][name], ranks[1]["state"][name]), name
        assert torch.allclose(ranks[0]["state"][name], value, atol=2e-5, rtol=1e-4), name
    # The logged training loss is the global batch's, not one shard's.
    for mine, ref in zip(ranks[0]["history"], single_history, strict=True):
        assert abs(mine["train_loss"] - ref["train_loss"]) < 1e-5, (mine, ref)
        assert abs(mine["val_loss"] - ref["val_loss"]) < 1e-4, (mine, ref)
    # Training moved the weights (the comparison is not between two untouched models).
    assert not torch.allclose(single_state["head.weight"], _untrained_head())


def _untrained_head() -> torch.Tensor:
    body = build_tiny_body()
    torch.manual_seed(1)
    embedder = SequenceEmbedder(4, 40, body.hidden_size, 8, body.position_embeddings, overlap=2)
    torch.manual_seed(2)
    return CrossModalModel(embedder, body, 2, "binary").state_dict()["head.weight"]


@pytest.mark.parametrize("stage", ["fit", "align"])
def test_a_bad_world_size_is_a_user_error_naming_the_variable(monkeypatch, stage):
    from flows.pipeline import run_stage

    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(UserError, match="WORLD_SIZE='two' is not an integer"):
        run_stage(stage, ctx=None)  # refused before the context is used
