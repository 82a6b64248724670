"""Shared fixtures of the training tests: one tiny prepped corpus per session (real data_prep output from
the shared TinyStories sample), the run-config overrides of a tiny model, and a clean env for children."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO_ROOT, shared_dir

PY = sys.executable
_CORPUS: dict[str, Path] = {}
# d 32, n_ctx 32 keeps a step cheap even with the 50k GPT-2 vocabulary (the lm_head dominates).
TINY = ["--model.d_model", "32", "--model.n_ctx", "32", "--train.micro_batch", "2", "--train.global_batch", "4",
        "--data.streams", "2", "--data.shuffle_buffer", "8", "--data.val_tokens", "1024", "--train.warmup", "2",
        "--log.eval_every", "3", "--log.stats_every", "3", "--train.device", "cpu"]


def prep_corpus_into(out: Path, *extra: str) -> Path:
    """Runs data_prep on the first TinyStories stories: 4k-token samples, several shards (extra: e.g.
    --resume, to repair a damaged prep the way its error message says)."""
    data = shared_dir() / "data"
    subprocess.run([PY, "-m", "data_prep", "tokenize", "--input", str(data / "tinystories/train-head.jsonl"),
                    "--tokenizer", str(data / "tokenizers/r50k_base.tiktoken"), "--out", str(out),
                    "--sample-tokens", "4096", "--shard-tokens", "60000", "--val-fraction", "0.05",
                    "--workers", "1", *extra], check=True, cwd=REPO_ROOT, env=child_env(), capture_output=True)
    return out


def prepped_corpus(tmp_path_factory) -> Path:
    """The session's one prepped corpus (see prep_corpus_into)."""
    if "dir" not in _CORPUS:
        _CORPUS["dir"] = prep_corpus_into(tmp_path_factory.mktemp("corpus") / "prep")
    return _CORPUS["dir"]


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child run: no inherited rank variables, one thread per process."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "MIXERSTACK_SELF_WORLD")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT), **extra)
    return env


def run_args(corpus: Path, run_dir: Path, name: str, *extra: str) -> list[str]:
    return ["--config", str(REPO_ROOT / "configs/runs/tiny-mixer.toml"), "--data.path", str(corpus),
            "--run.dir", str(run_dir), "--run.name", name, *TINY, *extra]


_RUNS: dict[tuple, Path] = {}


def torchrun(nproc: int, args: list[str], **popen) -> list[str]:
    from pretrain.distributed import free_port
    return [PY, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port", str(free_port()),
            "-m", "pretrain.train", *args]


def reference_run(tmp_path_factory, nproc: int, zero: int, *extra: str) -> Path:
    """A finished tiny run (6 steps, checkpoints every 2), made once per session and argument set:
    in-process for one rank, through torchrun for more."""
    key = (nproc, zero, extra)
    if key not in _RUNS:
        corpus = prepped_corpus(tmp_path_factory)
        root = tmp_path_factory.mktemp(f"run-{nproc}r-z{zero}")
        args = run_args(corpus, root, "ref", "--deepspeed.zero_stage", str(zero), "--train.steps", "6",
                        "--checkpoint.every", "2", "--checkpoint.keep", "5", *extra)
        if nproc == 1:
            from pretrain.train import main
            assert main(args) == 0
        else:
            done = subprocess.run(torchrun(nproc, args), cwd=REPO_ROOT, env=child_env(), capture_output=True,
                                  text=True, timeout=300)
            assert done.returncode == 0, done.stderr[-3000:]
        _RUNS[key] = root / "ref"
    return _RUNS[key]


def losses(run_dir: Path) -> dict[int, float]:
    from stackcore.rundir import read_metrics
    return {r["step"]: r["train_loss"] for r in read_metrics(run_dir) if r.get("train_loss") is not None}
