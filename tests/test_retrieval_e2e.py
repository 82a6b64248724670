"""Retrieval end to end on real text, each step through its command line: prep pairs -> pretrain a tiny
mixer -> contrastive fine-tune from it (--init.from) and a direct-embedding head on it (frozen) -> eval
retrieval of both runs beside BM25 and random; and the same evaluation as a job on the local Slurm."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT
from train_fixtures import child_env

PY = sys.executable
TINY = ["--model.d_model", "32", "--model.n_ctx", "32", "--train.device", "cpu", "--checkpoint.every", "0",
        "--log.eval_every", "0", "--train.warmup", "1", "--log.quiet", "true"]


def _run(args: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    done = subprocess.run([PY, "-m", *map(str, args)], cwd=REPO_ROOT, env=child_env(), capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, f"{args[:2]} -> {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


def _last_val(run: Path) -> dict:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in rows if "val_loss" in r][-1]


@pytest.fixture(scope="module")
def pipeline(shared_data, tmp_path_factory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("retrieval")
    stories = work / "stories.jsonl"
    stories.write_text("".join((shared_data / "tinystories/train-head.jsonl").read_text().splitlines(True)[:400]))
    pairs, runs = work / "pairs", work / "runs"
    _run(["data_prep", "pairs", "--input", stories, "--tokenizer", shared_data / "tokenizers/r50k_base.tiktoken",
          "--out", pairs, "--val-fraction", "0.2", "--workers", "1", "--progress", "false"])
    base = ["pretrain.train", "--config", REPO_ROOT / "configs/runs/tiny-mixer.toml", "--data.path", pairs,
            "--run.dir", runs, *TINY]
    _run([*base, "--run.name", "pre", "--train.steps", "6", "--train.micro_batch", "4", "--train.global_batch", "4"])
    _run([*base, "--run.name", "ft", "--init.from", runs / "pre", "--data.mode", "document",
          "--objective.name", "contrastive", "--objective.group", "4", "--objective.val_pairs", "16",
          "--train.steps", "4", "--train.micro_batch", "8", "--train.global_batch", "8", "--train.lr", "1e-4"])
    _run(["pretrain.train", "--config", runs / "pre/config.toml", "--run.name", "direct", "--data.mode", "document",
          "--objective.name", "retrieval", "--objective.embedder", runs / "pre", "--objective.candidates", "4",
          "--objective.val_queries", "24", "--train.steps", "4", "--train.micro_batch", "8",
          "--train.global_batch", "8", "--train.budget_flops", "0", "--checkpoint.resume", "none"])
    return {"work": work, "pairs": pairs, "runs": runs}


def test_prep_pretrain_finetune_eval(pipeline):
    runs, out = pipeline["runs"], pipeline["work"] / "eval"
    ft = _last_val(runs / "ft")
    assert ft["val_queries"] == 16 and 0 <= ft["val_top1"] <= 1 and ft["val_chance"] == 0.25
    direct = _last_val(runs / "direct")
    assert direct["val_candidates"] == 4 and direct["val_queries"] == 24
    assert direct["val_chance_ce"] == pytest.approx(1.0986, abs=1e-4)
    _run(["eval", "retrieval", "--run", runs / "pre", "--run", runs / "ft", "--pairs", pipeline["pairs"],
          "--candidates", "4,16", "--out", out])
    rows = list(csv.DictReader((out / "retrieval.csv").read_text().splitlines()))
    methods = {(r["method"], r["run"]) for r in rows}
    assert methods == {("random", "-"), ("bm25", "-"), ("embedding", "pre"), ("contrastive", "ft")}
    assert all(r["candidates"] in ("4", "16") and int(r["n_queries"]) == int(rows[0]["n_queries"]) for r in rows)
    assert "contrastive | ft" in (out / "report.md").read_text()
    refused = subprocess.run([PY, "-m", "eval", "retrieval", "--run", str(runs / "direct"), "--pairs",
                              str(pipeline["pairs"]), "--out", str(out / "direct")], cwd=REPO_ROOT, env=child_env(),
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "pass its embedder run" in refused.stderr


def test_fine_tuning_starts_from_the_pretrained_weights(pipeline):
    from eval.loss import load_checkpoint

    pre, _ = load_checkpoint(pipeline["runs"] / "pre")
    ft, _ = load_checkpoint(pipeline["runs"] / "ft")
    drift = (ft.embedding.weight - pre.embedding.weight).abs().max().item()
    assert 0 < drift < 0.01  # 4 steps at lr 1e-4 move it a little; a fresh initialisation would be far off


@pytest.mark.slurm
@pytest.mark.skipif(not os.environ.get("MIXERSTACK_SLURM"),
                    reason=os.environ.get("MIXERSTACK_SLURM_SKIP") or "no local Slurm cluster: `make test` starts "
                    "one and sets MIXERSTACK_SLURM=1")
def test_eval_retrieval_as_a_slurm_job_equals_the_local_run(pipeline):
    local, job = pipeline["work"] / "local", pipeline["work"] / "job"
    args = ["--pairs", pipeline["pairs"], "--candidates", "4,8", "--run", pipeline["runs"] / "ft"]
    _run(["eval", "retrieval", *args, "--out", local])
    _run(["eval.retrieval_job", "--time", "00:05:00", "--wait", "--", *args, "--out", job], timeout=600)
    assert (job / "retrieval.csv").read_text() == (local / "retrieval.csv").read_text()
    assert list((job / "slurm").glob("*_log.out"))
