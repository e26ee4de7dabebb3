"""Cost of one stage-1 step: RECRAFT (FA + FLD) vs our ORCA (closed-form OTDD) vs ORCA as released.

    .venv/bin/python benchmarks/alignment_cost.py [--quick]

One step is the objective's forward and backward w.r.t. the embedded target batch: B=64 target
samples of T=10 tokens in d=384 (the DNA task's shapes), against a source cloud of n points in
11 classes, with K=2 target classes (a binary task) and K=10 (k-means pseudo-labels). The target
embedder is left out (an identity on the tokens): it is the same small convolution for every
method. Contenders, timed interleaved in one process (median of k; see recording.py), every
(n, contender) pair of one K in the same loop, so that sizes are compared under the same load
(on a shared machine run it with ``--threads 1``, see ``recording.arguments``):

- ``recraft``: :func:`components.align_loop.alignment_terms` with ``need=("fa", "fld")``, as stage 1
  calls it: FA (debiased Sinkhorn to the cloud, ``OT(cloud, cloud)`` precomputed) and FLD,
  which runs the frozen body (MiniLM-L6 shapes, random weights: the cost does not depend on
  them) and the source head on the tokens. ``recraft_obj`` is the same without the body (the
  objectives alone).
- ``orca``: ``alignment_terms`` with ``need=("otdd",)``: our OTDD, closed-form Bures label
  distances, per target class, source self-term precomputed. It needs no body pass.
- ``reference``: ORCA's released OTDD configuration (``orca_reference.py``: label distances are
  inner entropic OT problems), source self-terms solved once; ``reference_released`` solves
  them again every step, as ORCA's released code does (K=2 only, 2 repetitions: the slow one).

The source-side precomputation (once per run, not per step) is reported as ``setup_s``. Data are
synthetic Gaussian classes (WNUT-16 has 2,394 sentences, fewer than the larger n here). Every
problem uses ``eps = 0.1`` relative to its mean cost and the 200-iteration cap of
``align.sinkhorn_iters``. The convergence table compares each objective's value at that cap with
a run at 2,000 iterations (tolerance 1e-9): a small relative change means the capped solve had
converged. Read the ratios (``reference / recraft`` etc.) and the scaling exponents (slope of
log time vs log n: 1 is linear in n, 2 quadratic).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable

import torch
from orca_reference import ReferenceSource, reference_otdd
from recording import arguments, environment, interleaved, median, parse, save, scaling_exponent
from torch import nn

from components.align_loop import AlignReference, alignment_terms
from components.alignment import entropic_ot, entropic_ot_cost, sinkhorn_divergence
from components.bodies import Body
from components.config import AlignParams

B, T, D, C_SRC = 64, 10, 384, 11


class _Tokens(nn.Module):
    """Identity target embedder: the batch already holds (B, T, d) token embeddings."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return x

    def token_mask(self, mask: torch.Tensor | None) -> None:
        return None


class _NoBody(nn.Module):
    def forward(self, u: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return u


def _minilm_shaped_body() -> Body:
    """A frozen BERT with all-MiniLM-L6-v2's shapes (6 layers, d=384, 12 heads), random weights."""
    from transformers import BertConfig, BertModel

    config = BertConfig(hidden_size=D, num_hidden_layers=6, num_attention_heads=12, intermediate_size=4 * D)
    body = Body(BertModel(config, add_pooling_layer=False)).eval()
    body.requires_grad_(False)
    return body


def _synthetic(n: int, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source cloud (n, d) with WNUT-like class shares; target tokens (B, T, d) with K classes."""
    g = torch.Generator().manual_seed(seed)
    shares = torch.tensor([6.0] + [4.0 / (i + 1) for i in range(C_SRC - 1)])  # "none" ~60%, then a tail
    src_labels = torch.multinomial(shares, n, replacement=True, generator=g)
    cloud = 0.5 * torch.randn(C_SRC, D, generator=g)[src_labels] + torch.randn(n, D, generator=g)
    tgt_labels = (torch.arange(B) % k)[torch.randperm(B, generator=g)]
    centres = 1.0 + 0.5 * torch.randn(k, D, generator=g)  # away from the cloud, as an untrained phi
    tokens = centres[tgt_labels].unsqueeze(1) + torch.randn(B, T, D, generator=g)
    return cloud, src_labels, tokens, tgt_labels


def _counted(fn: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, int]:
    """``fn()`` and how many did-not-converge warnings (ours or POT's) it raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = fn()
    return value, sum("converge" in str(w.message) for w in caught)


class _Setup:
    """Everything one source size needs, precomputed once: the references and their self-terms.

    ``seconds`` and ``warned`` hold, per objective, the time of that precomputation and the
    did-not-converge warnings it (and :meth:`objectives`) raised.
    """

    def __init__(self, cloud: torch.Tensor, src_labels: torch.Tensor, head: nn.Module, iters: int, tol: float):
        self.cfg, self.iters, self.tol = AlignParams(sinkhorn_iters=iters), iters, tol
        self.ref = AlignReference(cloud, head, src_labels)
        eps = self.cfg.eps
        parts = {
            "recraft_fa": lambda: entropic_ot(cloud, cloud, eps, iters, tol, scale=self.ref.scale).detach(),
            "orca_otdd": lambda: entropic_ot_cost(
                self.ref.labelled.self_cost(), eps, iters, tol, scale=self.ref.otdd_scale
            ).detach(),
            "reference": lambda: ReferenceSource.build(cloud, src_labels, eps, iters, tol),
        }
        self.seconds: dict[str, float] = {}
        self.warned: dict[str, int] = {}
        done = {}
        for name, fn in parts.items():
            started = time.perf_counter()
            done[name], self.warned[name] = _counted(fn)
            self.seconds[name] = time.perf_counter() - started
        self.ot_fa, self.ot_otdd, self.reference = done["recraft_fa"], done["orca_otdd"], done["reference"]

    def objectives(self, tokens: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """FA (as ``alignment_terms`` computes it, at this setup's tolerance), our OTDD and the reference."""
        x = tokens.mean(1)
        parts = {
            "recraft_fa": lambda: sinkhorn_divergence(
                x, self.ref.cloud, self.cfg.eps, self.iters, self.tol, ot_yy=self.ot_fa, scale=self.ref.scale
            ),
            "orca_otdd": lambda: alignment_terms(
                _Tokens(), _NoBody(), self.ref, tokens, labels, self.cfg, self.ot_otdd, ("otdd",)
            )["otdd"],
            "reference": lambda: reference_otdd(self.reference, x, labels),
        }
        values = {}
        for name, fn in parts.items():
            value, warned = _counted(fn)
            values[name] = float(value)
            self.warned[name] += warned
        return values


def _step(fn) -> None:
    """Forward + backward of one objective w.r.t. a fresh leaf copy of the batch."""
    fn().backward()


def _contenders(s: _Setup, tokens: torch.Tensor, labels: torch.Tensor, body: Body, released: bool) -> dict:
    def leaf() -> torch.Tensor:
        return tokens.clone().requires_grad_(True)

    def recraft(b: nn.Module) -> torch.Tensor:
        terms = alignment_terms(_Tokens(), b, s.ref, leaf(), labels, s.cfg, s.ot_fa, ("fa", "fld"))
        return terms["fa"] + terms["fld"]

    out = {
        "recraft": lambda: _step(lambda: recraft(body)),
        "recraft_obj": lambda: _step(lambda: recraft(_NoBody())),
        "orca": lambda: _step(
            lambda: alignment_terms(_Tokens(), body, s.ref, leaf(), labels, s.cfg, s.ot_otdd, ("otdd",))["otdd"]
        ),
        "reference": lambda: _step(lambda: reference_otdd(s.reference, leaf().mean(1), labels)),
    }
    if released:
        out["reference_released"] = lambda: _step(
            lambda: reference_otdd(s.reference, leaf().mean(1), labels, recompute_source=True)
        )
    return out


def _convergence(n: int, head: nn.Module, seed: int) -> dict[str, dict[str, float]]:
    """Each transport objective at the 200-iteration cap (tol 1e-6) vs 2,000 iterations (tol 1e-9), K=2.

    Our OTDD takes its per-class tolerance from :func:`components.otdd.otdd` (1e-6, not a
    parameter), so there only its cap changes.
    """
    cloud, src_labels, tokens, labels = _synthetic(n, 2, seed)
    runs = {}
    for iters, tol in ((200, 1e-6), (2000, 1e-9)):
        s = _Setup(cloud, src_labels, head, iters, tol)
        runs[iters] = (s.objectives(tokens, labels), s.warned)
    (capped, warned), (converged, _) = runs[200], runs[2000]
    return {
        name: {
            "at_200": capped[name],
            "at_2000": converged[name],
            "rel_change": abs(capped[name] - converged[name]) / max(abs(converged[name]), 1e-12),
            "not_converged_warnings_200": warned[name],
        }
        for name in capped
    }


def main() -> None:
    parser = arguments(__doc__, "n up to 2000, 3 repetitions", 5, 3)
    parser.add_argument("--sizes", default=None, help="comma-separated source sizes n (overrides the default)")
    parser.add_argument("--conv-n", type=int, default=None, help="n of the convergence check (default 1000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parse(parser)
    sizes = [500, 1000, 2000] if args.quick else [500, 1000, 2000, 5000]
    sizes = [int(v) for v in args.sizes.split(",")] if args.sizes else sizes
    reps = args.reps
    torch.manual_seed(args.seed)
    body, head = _minilm_shaped_body(), nn.Linear(D, C_SRC).requires_grad_(False)
    setups = {n: _Setup(*_synthetic(n, 2, args.seed)[:2], head, 200, 1e-6) for n in sizes}
    rows = []
    for k in (2, 10):
        # Every (n, contender) pair in one interleaved loop: the machine's load drifts over a
        # run, and the scaling exponents compare different n.
        contenders, few = {}, {}
        for n, s in setups.items():
            _, _, tokens, labels = _synthetic(n, k, args.seed)
            for name, fn in _contenders(s, tokens, labels, body, released=k == 2).items():
                contenders[f"{name}@{n}"] = fn
            few[f"reference_released@{n}"] = min(reps, 2)
        times = interleaved(contenders, reps, few)
        for n, s in setups.items():
            mine = {key.split("@")[0]: t for key, t in times.items() if key.endswith(f"@{n}")}
            med = {name: median(t) for name, t in mine.items()}
            setup = {
                "recraft": s.seconds["recraft_fa"],
                "orca": s.seconds["orca_otdd"],
                "reference": s.seconds["reference"],
            }
            rows.append({"n": n, "k": k, "seconds": mine, "median_s": med, "setup_s": setup})
            print(f"n={n} K={k}: " + ", ".join(f"{m}={v * 1e3:.0f} ms" for m, v in med.items()), flush=True)
    conv_n = args.conv_n or 1000
    convergence = _convergence(conv_n, head, args.seed)
    exponents = {}
    for k in (2, 10):
        mine = [r for r in rows if r["k"] == k]
        for name in mine[0]["median_s"]:
            exponents[f"{name}_k{k}"] = scaling_exponent([r["n"] for r in mine], [r["median_s"][name] for r in mine])
    record = {
        **environment(),
        "config": {"B": B, "T": T, "d": D, "source_classes": C_SRC, "eps": 0.1, "sinkhorn_iters": 200, "reps": reps},
        "rows": rows,
        "scaling_exponents": exponents,
        "convergence": {"n": conv_n, "k": 2, "values": convergence},
    }
    save("alignment_cost", record, _markdown(rows, exponents, convergence, conv_n, reps))


def _markdown(rows: list[dict], exponents: dict, convergence: dict, conv_n: int, reps: int) -> str:
    lines = [
        f"## Stage-1 step cost (forward + backward, B={B}, T={T}, d={D}; median of {reps}, ms)",
        "",
        "`recraft` includes FLD's pass through the frozen body; `recraft obj` is FA + FLD alone. "
        "`released`: the reference re-solving its source self-terms every step, as ORCA's code does.",
        "",
        "| K | n | recraft | recraft obj | orca | reference | ref/recraft | ref/recraft obj | ref/orca | "
        "orca/recraft | released | released/recraft | setup s (recraft/orca/ref) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        m, s = r["median_s"], r["setup_s"]
        rel = m.get("reference_released")
        released = "| | |" if rel is None else f"| {rel * 1e3:.0f} | {rel / m['recraft']:.1f} |"
        ref = m["reference"]
        lines.append(
            f"| {r['k']} | {r['n']} | {m['recraft'] * 1e3:.0f} | {m['recraft_obj'] * 1e3:.0f} | "
            f"{m['orca'] * 1e3:.0f} | {ref * 1e3:.0f} | {ref / m['recraft']:.1f} | {ref / m['recraft_obj']:.1f} | "
            f"{ref / m['orca']:.1f} | {m['orca'] / m['recraft']:.2f} {released} "
            f"{s['recraft']:.1f} / {s['orca']:.1f} / {s['reference']:.1f} |"
        )
    lines += ["", "Scaling exponent of step time in n (slope of log t vs log n):", ""]
    lines += [f"- {name}: {value:.2f}" for name, value in exponents.items()]
    lines += [
        "",
        f"## Convergence at the 200-iteration cap (n={conv_n}, K=2): value at 200 vs 2,000 iterations",
        "",
        "| objective | at 200 | at 2000 | relative change | not-converged warnings at 200 |",
        "|---|---|---|---|---|",
    ]
    for name, v in convergence.items():
        lines.append(
            f"| {name} | {v['at_200']:.5g} | {v['at_2000']:.5g} | {v['rel_change']:.2e} | "
            f"{v['not_converged_warnings_200']} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
