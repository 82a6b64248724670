"""Models benchmark (CPU): (1) forward+backward throughput of the mixer's token mixing as
implemented (TokenMixing: W * mask, per-position bias, head reshapes) vs a bare `torch.matmul` of
the same shapes, timed alternately in the same run (goal: ratio >= 0.8); (2) training tokens/s of
the paper's matched pair (mixer d1024 x16 vs Llama d512 x16 x4 heads, n_ctx 512) scaled down to CPU
size, with their FLOPs/token and estimated memory.

    .venv/bin/python benchmarks/bench_models.py [--threads N] [--quick]
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch

from pretrain.config import ModelConfig
from pretrain.models import build_model
from pretrain.models.flops import memory_estimate, param_counts, training_flops_per_token
from pretrain.models.mixer import TokenMixing


def alternate(fns: dict, rounds: int, inner: int) -> dict:
    """Median seconds per call of each fn, timing them in alternation so load changes hit all alike."""
    times = {name: [] for name in fns}
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(inner):
                fn()
            times[name].append((time.perf_counter() - start) / inner)
    return {name: statistics.median(ts) for name, ts in times.items()}


def bench_mixing(batch: int, n_ctx: int, d: int, rounds: int) -> None:
    cfg = ModelConfig(family="mixer", d_model=d, n_ctx=n_ctx)
    mixing = TokenMixing(cfg)
    x = torch.randn(batch, n_ctx, d, requires_grad=True)
    w = torch.randn(n_ctx, n_ctx, requires_grad=True)
    grad = torch.randn(batch, n_ctx, d)

    def implemented():
        mixing(x).backward(grad)

    def bare():
        torch.matmul(w, x).backward(grad)

    # the roofline: one plain GEMM on inputs already laid out as [T, B*d] (no reshapes, no mask)
    x_cols = torch.randn(n_ctx, batch * d, requires_grad=True)
    grad_cols = torch.randn(n_ctx, batch * d)

    def gemm():
        torch.mm(w, x_cols).backward(grad_cols)

    t = alternate({"implemented": implemented, "bare": bare, "gemm": gemm}, rounds, 3)
    flops = 3 * 2 * batch * n_ctx * n_ctx * d
    print(f"token mixing fwd+bwd  B={batch} T={n_ctx} d={d}:")
    labels = {"implemented": "TokenMixing", "bare": "torch.matmul(W[T,T], x[B,T,d])",
              "gemm": "torch.mm(W, x[T,B*d])"}
    for name, label in labels.items():
        print(f"  {label:<32} {t[name] * 1e3:8.2f} ms  {flops / t[name] / 1e9:7.2f} GFLOP/s")
    print(f"  throughput ratio implemented/bare matmul = {t['bare'] / t['implemented']:.3f} (goal >= 0.8); "
          f"implemented/plain GEMM = {t['gemm'] / t['implemented']:.3f}")


def train_step_fn(cfg: ModelConfig, batch: int):
    torch.manual_seed(0)
    model = build_model(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, cfg.vocab_size, (batch, cfg.n_ctx))

    def step():
        loss = model(ids, labels=ids).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def bench_pair(scale: int, n_ctx: int, batch: int, rounds: int) -> None:
    mixer = ModelConfig(family="mixer", d_model=1024 // scale, n_layers=16 // scale, n_ctx=n_ctx, vocab_size=8000)
    llama = ModelConfig(family="llama", d_model=512 // scale, n_layers=16 // scale, n_ctx=n_ctx,
                        vocab_size=8000, heads=4)
    t = alternate({"mixer": train_step_fn(mixer, batch), "llama": train_step_fn(llama, batch)}, rounds, 1)
    tokens = batch * n_ctx
    print(f"\npaper pair scaled 1/{scale} (width and depth), n_ctx {n_ctx}, batch {batch}, AdamW train step:")
    for name, cfg in (("mixer", mixer), ("llama", llama)):
        f = training_flops_per_token(cfg)
        mem = memory_estimate(cfg, batch=batch)["total"] / 2**20
        print(f"  {name:<6} d{cfg.d_model} x{cfg.n_layers} h{cfg.heads}: {tokens / t[name]:9.0f} tokens/s, "
              f"{param_counts(cfg)['total'] / 1e6:6.2f} M params, {f / 1e6:7.2f} MFLOP/token, "
              f"{f * tokens / t[name] / 1e9:6.2f} GFLOP/s, est. memory {mem:7.1f} MiB")
    print(f"  tokens/s ratio mixer/llama = {t['llama'] / t['mixer']:.3f}; "
          f"FLOPs/token ratio = {training_flops_per_token(mixer) / training_flops_per_token(llama):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    parser.add_argument("--quick", action="store_true", help="fewer rounds, smaller shapes")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    rounds = 3 if args.quick else 7
    bench_mixing(batch=8, n_ctx=256 if args.quick else 512, d=256, rounds=rounds)
    bench_pair(scale=4, n_ctx=128 if args.quick else 512, batch=4, rounds=rounds)


if __name__ == "__main__":
    main()
