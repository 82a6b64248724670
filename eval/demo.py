"""`make demo` = `python -m eval.demo`: the whole stack end to end, offline, in a few minutes on CPU.

1. prep: train a small BPE tokenizer on the embedded corpus (`builtin:python-docs`) and tokenize it
   into shards with the data_prep CLI;
2. plan: a tiny Llama-style transformer as the reference and the masked mixer closest to it in
   training FLOPs/token (`eval.match.plan`);
3. train both to the same FLOP budget with `pretrain.train` (validation every few steps);
4. `eval compare` the two runs: print the table, the plot, the tensorboard logs.

Everything lands under --out (default runs/demo); rerunning reuses the prepped data and retrains.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from eval.launch import prep_corpus, train_run
from pretrain.config import ModelConfig
from pretrain.models.flops import param_counts, training_flops_per_token
from stackcore.errors import run_cli

CORPUS = "builtin:python-docs"
VOCAB = 2048
N_CTX = 64
BATCH = 16
VAL_TOKENS = 8192
EVALS = 12  # validation points per run: enough for the interpolated comparison
LR = 3e-3  # tiny models, few hundred steps: a high learning rate gets somewhere in minutes


def step(title: str) -> None:
    print(f"\n=== {title}", flush=True)


def plan_pair(d_model: int) -> tuple[ModelConfig, ModelConfig]:
    """A tiny Llama and the masked mixer closest to it in training FLOPs/token."""
    from eval.match import plan
    llama = ModelConfig(family="llama", d_model=d_model, n_layers=2, n_ctx=N_CTX, vocab_size=VOCAB, heads=4)
    mixer = plan(llama, "mixer", "flops", top=1)[0]["config"]
    step("2/4 matched-compute pair (eval.match.plan, by training FLOPs/token)")
    for cfg in (llama, mixer):
        print(f"{cfg.family:<6} d{cfg.d_model} x{cfg.n_layers} h{cfg.heads} n_ctx {cfg.n_ctx}: "
              f"{training_flops_per_token(cfg):.3g} FLOPs/token, {param_counts(cfg)['total']:,} params")
    return mixer, llama


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--budget-flops", type=float, default=4e12, help="training FLOPs per model")
    parser.add_argument("--d-model", type=int, default=128, help="width of the reference Llama")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    step(f"1/4 prep {CORPUS}: BPE tokenizer ({VOCAB} tokens) and shards")
    data = prep_corpus([CORPUS], out, VOCAB, val_fraction=0.05)
    mixer, llama = plan_pair(args.d_model)
    step(f"3/4 train both to {args.budget_flops:.3g} FLOPs")
    run_dirs = [train_run(cfg, data, out / "runs", f"{cfg.family}-d{cfg.d_model}x{cfg.n_layers}", args.budget_flops,
                          seed=args.seed, batch=BATCH, lr=LR, evals=EVALS, val_tokens=VAL_TOKENS)
                for cfg in (mixer, llama)]
    step("4/4 eval compare")
    from eval.compare import compare
    result = compare(run_dirs, out / "compare")
    print(result["markdown"])
    print(f"\nreport:      {result['report']}")
    print(f"plot:        {result['plots']['flops']}")
    for r in run_dirs:
        print(f"tensorboard: {r / 'tb'}")
    print(f"view them:   tensorboard --logdir {out / 'runs'}")
    print(f"demo done in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, bad_input=(FileNotFoundError,)))
