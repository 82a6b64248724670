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
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from pretrain.config import ModelConfig
from pretrain.models.flops import param_counts, training_flops_per_token

CORPUS = "builtin:python-docs"
VOCAB = 2048
N_CTX = 64
BATCH = 16
VAL_TOKENS = 8192
EVALS = 12  # validation points per run: enough for the interpolated comparison


def step(title: str) -> None:
    print(f"\n=== {title}", flush=True)


def run_module(args: list[str], log: Path | None = None) -> None:
    """`python -m ...` in a child process (a clean DeepSpeed/torch state per run); fail loudly."""
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", str(min(2, os.cpu_count() or 1))))
    cmd = [sys.executable, "-m", *args]
    print("$ " + " ".join(cmd), flush=True)
    if log is None:
        proc = subprocess.run(cmd, env=env)
    else:
        with open(log, "w") as fh:
            proc = subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        hint = f"; see {log}" if log else ""
        raise SystemExit(f"demo: `{' '.join(args[:2])}` failed with exit code {proc.returncode}{hint}")


def prep(out: Path) -> Path:
    step(f"1/4 prep {CORPUS}: BPE tokenizer ({VOCAB} tokens) and shards")
    tok = out / f"tokenizer{VOCAB}.tiktoken"
    data = out / "data"
    if not tok.is_file():
        run_module(["data_prep", "train-tokenizer", "--input", CORPUS, "--vocab-size", str(VOCAB),
                    "--out", str(tok), "--max-bytes", "4000000"])
    if not (data / "manifest.json").is_file():
        shutil.rmtree(data, ignore_errors=True)
        run_module(["data_prep", "tokenize", "--input", CORPUS, "--tokenizer", str(tok), "--out", str(data),
                    "--val-fraction", "0.05", "--workers", "2"])
    else:
        print(f"reusing {data}")
    return data


def plan_pair(d_model: int) -> tuple[ModelConfig, ModelConfig]:
    from eval.match import plan
    llama = ModelConfig(family="llama", d_model=d_model, n_layers=2, n_ctx=N_CTX, vocab_size=VOCAB, heads=4)
    best = plan(llama, "mixer", "flops", top=1)[0]
    mixer = best["config"]
    step("2/4 matched-compute pair (eval.match.plan, by training FLOPs/token)")
    for cfg in (llama, mixer):
        print(f"{cfg.family:<6} d{cfg.d_model} x{cfg.n_layers} h{cfg.heads} n_ctx {cfg.n_ctx}: "
              f"{training_flops_per_token(cfg):.3g} FLOPs/token, {param_counts(cfg)['total']:,} params")
    return mixer, llama


def train(cfg: ModelConfig, data: Path, runs: Path, budget: float, seed: int) -> Path:
    name = f"{cfg.family}-d{cfg.d_model}x{cfg.n_layers}"
    steps = int(budget / (training_flops_per_token(cfg) * BATCH * N_CTX)) + 1
    args = ["pretrain.train", "--run.name", name, "--run.dir", str(runs), "--run.seed", str(seed),
            "--data.path", str(data), "--data.val_tokens", str(VAL_TOKENS),
            "--train.budget_flops", repr(float(budget)), "--train.steps", str(steps + 10),
            "--train.micro_batch", str(BATCH), "--train.global_batch", str(BATCH), "--train.lr", "3e-3",
            "--train.warmup", str(max(1, steps // 20)), "--train.device", "cpu",
            "--log.every", "5", "--log.eval_every", str(max(1, steps // EVALS)), "--checkpoint.resume", "none"]
    for key in ("family", "d_model", "n_layers", "n_ctx", "vocab_size", "heads"):
        args += [f"--model.{key}", str(getattr(cfg, key))]
    shutil.rmtree(runs / name, ignore_errors=True)  # a fresh run each time: the demo shows training
    run_module(args)
    return runs / name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/demo")
    parser.add_argument("--budget-flops", type=float, default=1.5e12, help="training FLOPs per model")
    parser.add_argument("--d-model", type=int, default=128, help="width of the reference Llama")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = prep(out)
    mixer, llama = plan_pair(args.d_model)
    step(f"3/4 train both to {args.budget_flops:.3g} FLOPs")
    run_dirs = [train(cfg, data, out / "runs", args.budget_flops, args.seed) for cfg in (mixer, llama)]
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
    sys.exit(main())
