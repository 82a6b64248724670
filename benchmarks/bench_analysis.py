"""Costs of the analysis tools, measured side by side on this machine (CPU, one thread by default).

    .venv/bin/python benchmarks/bench_analysis.py [--d 128 --layers 4 --n-ctx 64 --steps 100]

- Hamming metric: gradient-descent steps per second for a mixer and a Llama of the same shape
  (each step is one forward + one input-gradient backward through the blocks), and the projected
  wall time of the default 500-step, all-depth measurement;
- generation: new tokens per second (greedy, no KV cache: every step re-reads the window);
- stability metrics: rows per second on a long synthetic curve.
"""
from __future__ import annotations

import argparse
import math
import os
import random
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from eval.hamming import hamming  # noqa: E402
from eval.stability import stability  # noqa: E402
from pretrain.config import ModelConfig  # noqa: E402
from pretrain.generate import generate  # noqa: E402
from pretrain.models import build_model  # noqa: E402


def timed(fn, repeat: int = 3) -> float:
    best = math.inf
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--n-ctx", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=50257)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--new-tokens", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    print(f"shape d{args.d} x{args.layers} n_ctx={args.n_ctx} vocab={args.vocab}, "
          f"threads={torch.get_num_threads()}")
    ids = torch.randint(0, args.vocab, (args.samples, args.n_ctx), generator=torch.Generator().manual_seed(0))
    rates = {}
    for family in ("mixer", "llama"):
        torch.manual_seed(0)
        model = build_model(ModelConfig(family=family, d_model=args.d, n_layers=args.layers, n_ctx=args.n_ctx,
                                        vocab_size=args.vocab, heads=1 if family == "mixer" else 4))
        t_h = timed(lambda: hamming(model, ids, steps=args.steps, lr=0.05), repeat=2)
        steps_per_s = args.steps / t_h
        full = args.layers * 500 / steps_per_s  # 500 steps at every depth (upper bound: shallower is cheaper)
        t_g = timed(lambda: generate(model, [1, 2, 3], max_new_tokens=args.new_tokens), repeat=2)
        rates[family] = (steps_per_s, args.new_tokens / t_g)
        print(f"{family:6s} hamming: {steps_per_s:7.1f} GD steps/s on {args.samples} x {args.n_ctx} tokens "
              f"(default 500 steps x {args.layers} depths <= {full:6.1f} s); "
              f"generate: {args.new_tokens / t_g:7.1f} tokens/s")
    print(f"ratio mixer/llama: hamming steps/s {rates['mixer'][0] / rates['llama'][0]:.2f}x, "
          f"generate tokens/s {rates['mixer'][1] / rates['llama'][1]:.2f}x")
    rng = random.Random(0)
    curve = [3.0 + rng.random() for _ in range(1_000_000)]
    grads = [1.0] * len(curve)
    t_s = timed(lambda: stability(curve, grads), repeat=1)
    print(f"stability: {len(curve) / t_s / 1e6:.2f} M rows/s (1M-step curve in {t_s:.2f} s)")


if __name__ == "__main__":
    main()
