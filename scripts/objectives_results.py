"""The CPU-scale results of issue 11 (docs/results/objectives.md): mixer vs Llama on the paper's other
systems at matched training FLOPs, each family at its best learning rate, 3 seeds.

    .venv/bin/python scripts/objectives_results.py            # runs what is missing, then --report
    .venv/bin/python scripts/objectives_results.py --report   # the table from the committed curves alone

Protocol: per system and family, a learning-rate sweep at seed 0 (LRS, extended by a factor 3 when the
best is at an edge, at most twice); the best LR is the one with the lowest final validation loss; seeds 1 and 2 then run
at that LR. Every run of a system trains to the same
dense FLOP budget (SPECS: a number of mixer steps), so the Llama takes fewer steps. Each run's logged rows go
to docs/results/data/objectives/<system>-<family>-lr<lr>-s<seed>.jsonl (the raw curves); the report reads
only those files and is deterministic. Data: TinyStories (the shared train-head sample) with a 4,096-token
BPE trained on it (the paper's TinyStories vocabulary size), prepared once into --data.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stackcore.atomic import atomic_write_text  # noqa: E402
from stackcore.errors import UserError, run_cli  # noqa: E402

CURVES = REPO / "docs/results/data/objectives"
REPORT = REPO / "docs/results/objectives.md"
BASELINE = CURVES / "unigram_baseline.json"
FAMILIES = ("mixer", "llama")
# system -> (the configs it runs: configs/runs/<base>-<family>-tiny.toml, extra overrides, mixer steps of
# its FLOP budget). causal is the reference pair; autoencoder_ctx16 a shorter sequence trained 4x longer.
SPECS = {
    "autoencoder": ("autoencoder", [], 200),
    "autoencoder_ctx16": ("autoencoder", ["--model.n_ctx", "16", "--log.eval_every", "100"], 800),
    "completion": ("completion", [], 200),
    "mtp": ("mtp", [], 200),
    "bidirectional": ("bidirectional", [], 200),
    "causal": ("causal", [], 200),
}
SYSTEMS = tuple(SPECS)
LRS = (1e-3, 3e-3, 1e-2)
SEEDS = (0, 1, 2)
MAX_EXTENSIONS = 2  # as the comparison protocol (docs/protocol.md): at most two steps beyond an edge
SHAPE = ["--model.vocab_size", "4096", "--model.d_model", "64", "--model.n_layers", "2", "--model.n_ctx", "64"]
TRAIN = ["--train.steps", "100000", "--train.warmup", "10", "--train.micro_batch", "8", "--train.global_batch", "8",
         "--train.schedule", "linear", "--data.val_tokens", "8192", "--data.shuffle_buffer", "64",
         "--log.every", "5", "--log.eval_every", "25", "--checkpoint.every", "0", "--log.quiet", "true",
         "--train.weight_decay", "0.0", "--train.device", "cpu"]


def config_of(system: str, family: str) -> Path:
    base = SPECS[system][0]
    name = "tiny-" + family if base == "causal" else f"{base}-{family}-tiny"
    return REPO / "configs/runs" / f"{name}.toml"


def budget_flops(system: str) -> float:
    """The system's budget of mixer steps, in FLOPs: what both families of the system train to."""
    from pretrain.config import RunConfig
    from pretrain.objectives import build_objective
    from stackcore.config import load_config

    _, extra, steps = SPECS[system]
    cfg = load_config(RunConfig, config_of(system, "mixer"), SHAPE + TRAIN + extra)
    objective = build_objective(cfg)
    return objective.flops_per_sample() * cfg.train.global_batch * steps


def prepare_data(data: Path) -> None:
    """A 4,096-token BPE on the shared TinyStories sample, then shards (5% validation), once."""
    if (data / "manifest.json").is_file():
        return
    from stackcore.paths import shared_dir
    stories = shared_dir("data") / "tinystories/train-head.jsonl"
    tokenizer = data.parent / f"{data.name}-bpe4k.tiktoken"
    py = [sys.executable, "-m", "data_prep"]
    subprocess.run(py + ["train-tokenizer", "--input", str(stories), "--vocab-size", "4096", "--out", str(tokenizer)],
                   check=True, cwd=REPO)
    subprocess.run(py + ["tokenize", "--input", str(stories), "--tokenizer", str(tokenizer), "--out", str(data),
                         "--workers", "1", "--val-fraction", "0.05"], check=True, cwd=REPO)


def split_tokens(data: Path, split: str) -> list[int]:
    """Every token of one split of the prep, in manifest order."""
    import numpy as np
    from webdataset.tariterators import tarfile_samples
    from data_prep.format import decode_sample, read_manifest, shard_paths

    manifest = read_manifest(data)
    out: list[int] = []
    for path in shard_paths(data, manifest, split):
        for sample in tarfile_samples([{"url": str(path)}]):
            out.extend(np.asarray(decode_sample(sample, manifest["dtype"])[0]).tolist())
    return out


def write_unigram_baseline(data: Path) -> None:
    """The CE of the best input-blind predictor (add-one-smoothed train unigram on the validation tokens):
    a run at this loss has learned token frequencies only. The report reads it from BASELINE."""
    if BASELINE.is_file():
        return
    import math
    from collections import Counter
    counts, vocab = Counter(split_tokens(data, "train")), 4096
    total = sum(counts.values())
    val = split_tokens(data, "val")[:8192]
    ce = -sum(math.log((counts[t] + 1) / (total + vocab)) for t in val) / len(val)
    atomic_write_text(BASELINE, json.dumps({"unigram_val_ce": round(ce, 4), "val_tokens": len(val)}) + "\n")


def curve_path(system: str, family: str, lr: float, seed: int) -> Path:
    return CURVES / f"{system}-{family}-lr{lr:g}-s{seed}.jsonl"


def train_one(system: str, family: str, lr: float, seed: int, data: Path, runs: Path, budget: float) -> None:
    """One run (skipped when its curve is committed already); its logged rows become the curve file."""
    out = curve_path(system, family, lr, seed)
    if out.is_file():
        return
    name = out.stem
    args = [sys.executable, "-m", "pretrain.train", "--config", str(config_of(system, family)),
            "--data.path", str(data), "--run.dir", str(runs), "--run.name", name, "--run.seed", str(seed),
            "--train.lr", str(lr), "--train.budget_flops", repr(budget), "--checkpoint.resume", "none",
            *SHAPE, *TRAIN, *SPECS[system][1]]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed (rc {done.returncode}):\n{done.stderr[-3000:]}")
    keep = ("step", "tokens", "flops", "train_loss", "val_loss", "val_head1_loss", "val_head2_loss", "wall_s")
    rows = []
    for line in (runs / name / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        rows.append({"system": system, "family": family, "lr": lr, "seed": seed,
                     **{k: row[k] for k in keep if row.get(k) is not None}})
    atomic_write_text(out, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
    print(f"{name}: final val_loss {final(rows, 'val_loss'):.4f}", flush=True)


def final(rows: list[dict], key: str) -> float:
    return [r[key] for r in rows if key in r][-1]


def train_loss_end(rows: list[dict]) -> float:
    """Mean logged training loss over the last 10% of the run's steps (one batch is noisy)."""
    last = rows[-1]["step"]
    tail = [r["train_loss"] for r in rows if "train_loss" in r and r["step"] > 0.9 * last]
    return statistics.fmean(tail)


def load_curves() -> dict[tuple, list[dict]]:
    curves = {}
    for path in sorted(CURVES.glob("*-s[0-9]*.jsonl")):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if rows:
            r = rows[0]
            curves[(r["system"], r["family"], r["lr"], r["seed"])] = rows
    return curves


def best_lr(curves: dict, system: str, family: str) -> float | None:
    sweep = {lr: final(rows, "val_loss") for (s, f, lr, seed), rows in curves.items()
             if s == system and f == family and seed == 0}
    return min(sweep, key=lambda lr: (sweep[lr], lr)) if sweep else None


def run_sweep(data: Path, runs: Path, systems: list[str]) -> None:
    prepare_data(data)
    write_unigram_baseline(data)
    for system in systems:
        budget = budget_flops(system)
        for family in FAMILIES:
            for lr in LRS:
                train_one(system, family, lr, 0, data, runs, budget)
            lr = best_lr(load_curves(), system, family)
            for _ in range(MAX_EXTENSIONS):  # best at an edge: one more LR beyond it, a factor 3 away
                tried = sorted(lr_ for (s, f, lr_, seed) in load_curves() if (s, f, seed) == (system, family, 0))
                if lr not in (tried[0], tried[-1]):
                    break
                beyond = float(f"{lr * 3 if lr == tried[-1] else lr / 3:.1g}")  # e.g. 3e-2, then 1e-1
                train_one(system, family, beyond, 0, data, runs, budget)
                lr = best_lr(load_curves(), system, family)
            for seed in SEEDS[1:]:
                train_one(system, family, lr, seed, data, runs, budget)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", action="store_true", help="only recompute the report from the curves")
    parser.add_argument("--data", default="data/ts4k", help="prepared TinyStories (made when missing)")
    parser.add_argument("--runs", default="runs/objectives", help="run directories of the sweep")
    parser.add_argument("--systems", nargs="*", default=list(SYSTEMS), choices=SYSTEMS)
    args = parser.parse_args()
    if not args.report:
        run_sweep(REPO / args.data, REPO / args.runs, args.systems)
    from objectives_report import write_report
    curves = load_curves()
    if not curves:
        raise UserError(f"no curves under {CURVES.relative_to(REPO)}: run the sweep first (without --report)")
    write_report(curves, REPORT, json.loads(BASELINE.read_text()) if BASELINE.is_file() else None)
    print(f"wrote {REPORT.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
