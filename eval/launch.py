"""Small launchers shared by the demo and the benchmarks: data_prep and pretrain.train through their
command lines, one child process each (a clean torch/DeepSpeed state per run)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from pretrain.config import ModelConfig
from pretrain.models.flops import training_flops_per_token

MODEL_KEYS = ("family", "d_model", "n_layers", "n_ctx", "vocab_size", "heads")


def run_module(args: list[str], log: Path | None = None) -> None:
    """`python -m ARGS` in a child process; raises SystemExit naming the command (and log) on failure."""
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", str(min(2, os.cpu_count() or 1))))
    cmd = [sys.executable, "-m", *args]
    print("$ " + " ".join(cmd), flush=True)
    if log is None:
        proc = subprocess.run(cmd, env=env)
    else:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as fh:
            proc = subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        hint = f"; see {log}" if log else ""
        raise SystemExit(f"`python -m {' '.join(args[:2])}` failed with exit code {proc.returncode}{hint}")


def prep_corpus(inputs: list[str], out: Path, vocab: int, val_fraction: float, max_bytes: int = 4_000_000) -> Path:
    """A BPE tokenizer of `vocab` tokens trained on the inputs, then the tokenized shards (both reused
    when present). Returns the prep directory."""
    tok = out / f"tokenizer{vocab}.tiktoken"
    data = out / "data"
    if not tok.is_file():
        run_module(["data_prep", "train-tokenizer", "--input", *inputs, "--vocab-size", str(vocab),
                    "--out", str(tok), "--max-bytes", str(max_bytes)])
    if not (data / "manifest.json").is_file():
        shutil.rmtree(data, ignore_errors=True)
        run_module(["data_prep", "tokenize", "--input", *inputs, "--tokenizer", str(tok), "--out", str(data),
                    "--val-fraction", str(val_fraction), "--workers", "2"])
    else:
        print(f"reusing {data}")
    return data


def train_run(cfg: ModelConfig, data: Path, runs: Path, name: str, budget_flops: float, *, seed: int = 0,
              batch: int = 16, lr: float = 3e-3, evals: int = 12, val_tokens: int = 8192,
              log: Path | None = None, extra: list[str] | None = None) -> Path:
    """Trains `cfg` from scratch to `budget_flops` (the models' dense FLOP accounting), validating about
    `evals` times; returns the run directory."""
    steps = int(budget_flops / (training_flops_per_token(cfg) * batch * cfg.n_ctx)) + 1
    args = ["pretrain.train", "--run.name", name, "--run.dir", str(runs), "--run.seed", str(seed),
            "--data.path", str(data), "--data.val_tokens", str(val_tokens),
            "--train.budget_flops", repr(float(budget_flops)), "--train.steps", str(steps + 10),
            "--train.micro_batch", str(batch), "--train.global_batch", str(batch), "--train.lr", repr(lr),
            "--train.warmup", str(max(1, steps // 20)), "--train.device", "cpu",
            "--log.every", "5", "--log.eval_every", str(max(1, steps // evals)), "--checkpoint.resume", "none"]
    for key in MODEL_KEYS:
        args += [f"--model.{key}", str(getattr(cfg, key))]
    shutil.rmtree(runs / name, ignore_errors=True)  # from scratch: a stale run would be resumed or mixed in
    run_module(args + list(extra or []), log)
    return runs / name
