"""The paper's context-length comparison at CPU scale: masked mixer vs Llama at matched FLOPs for
n_ctx 32, 128 and 512 on the shared TinyStories sample, several seeds, then `eval compare`.

    .venv/bin/python benchmarks/bench_paper_ctx.py [--seeds 3] [--budget-flops 3e12] [--ctx 32,128,512]

Published direction (Masked Mixers, arXiv 2409.01482 and its blog follow-ups, fineweb-edu/FineMath):
the mixer is ahead at n_ctx 32, overtakes the transformer during training at 128, and the transformer
is slightly ahead at 512. We print our measured table next to it, whatever it says.

Runs that finished before (status.json state "completed") are reused, so an interrupted benchmark
continues where it stopped. Everything lands under --out (default runs/bench_paper_ctx).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eval.compare import compare  # noqa: E402
from eval.launch import prep_corpus, train_run  # noqa: E402
from eval.match import plan  # noqa: E402
from pretrain.config import ModelConfig  # noqa: E402
from pretrain.models.flops import param_counts, training_flops_per_token  # noqa: E402
from stackcore.paths import shared_dir  # noqa: E402
from stackcore.rundir import read_status  # noqa: E402

PUBLISHED = {32: "mixer ahead", 128: "mixer overtakes during training", 512: "transformer slightly ahead"}
TOKENS_PER_STEP = 2048  # the paper scales the batch inversely with n_ctx (2048/512/128 sequences)


def shared_data() -> Path:
    return shared_dir("data")  # $MIXERSTACK_SHARED or the folder beside the repository


def completed(run_dir: Path) -> bool:
    return (read_status(run_dir) or {}).get("state") == "completed"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench_paper_ctx"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget-flops", type=float, default=3e12)
    parser.add_argument("--ctx", default="32,128,512")
    parser.add_argument("--d-model", type=int, default=128, help="width of the reference Llama (2 layers, 4 heads)")
    parser.add_argument("--vocab", type=int, default=2048)
    parser.add_argument("--lr", type=float, default=3e-3)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    corpus = str(shared_data() / "tinystories" / "train-lower.jsonl.zst")
    data = prep_corpus([corpus], out, args.vocab, val_fraction=0.05)
    run_dirs, timings = [], []
    for n_ctx in [int(c) for c in args.ctx.split(",")]:
        llama = ModelConfig(family="llama", d_model=args.d_model, n_layers=2, n_ctx=n_ctx, vocab_size=args.vocab,
                            heads=4)
        mixer = plan(llama, "mixer", "flops", top=1)[0]["config"]
        for cfg in (mixer, llama):
            print(f"n_ctx {n_ctx}: {cfg.family} d{cfg.d_model}x{cfg.n_layers} {training_flops_per_token(cfg):.3g} "
                  f"FLOPs/token, {param_counts(cfg)['total']:,} params", flush=True)
            for seed in range(args.seeds):
                name = f"ctx{n_ctx}-{cfg.family}-d{cfg.d_model}x{cfg.n_layers}-s{seed}"
                run = out / "runs" / name
                if not completed(run):
                    t0 = time.perf_counter()
                    train_run(cfg, data, out / "runs", name, args.budget_flops, seed=seed,
                              batch=max(1, TOKENS_PER_STEP // n_ctx), lr=args.lr, evals=10, val_tokens=8192,
                              log=out / "logs" / f"{name}.log")
                    timings.append((name, time.perf_counter() - t0))
                    print(f"  {name}: {timings[-1][1]:.0f} s", flush=True)
                run_dirs.append(run)
    result = compare(run_dirs, out / "compare")
    print("\n" + result["markdown"])
    print("\npublished direction (fineweb-edu / FineMath, 16 layers, 200k steps):")
    for n_ctx, text in PUBLISHED.items():
        rows = [r for r in result["tables"]["flops"] if r["n_ctx"] == n_ctx and "winner" in r]
        ours = "; ".join(f"{r['winner']} ahead ({r['spread']})" for r in rows) or "not run"
        print(f"  n_ctx {n_ctx:>3}: published {text:<34} | measured: {ours}")
    print(f"\nreport: {result['report']}\nplot: {result['plots'].get('flops')}")
    print(f"wall {time.perf_counter() - start:.0f} s for {len(timings)} new runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
