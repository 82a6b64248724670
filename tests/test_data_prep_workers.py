"""Determinism of the task pipeline: 1 vs 2 workers, Slurm-style task-by-index runs, SIGKILL + --resume."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from data_prep.__main__ import main as prep_main
from data_prep.format import read_manifest
from data_prep.tasks import PrepError, finalize, pending_tasks, plan_tasks, run_task

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus(shared_data, tmp_path_factory) -> list[str]:
    """Several tasks of each reader: the enwiki Parquet re-written with 12 row groups (task_mb=0.25 makes
    roughly one task per row group), TinyStories jsonl / jsonl.zst / txt."""
    folder = tmp_path_factory.mktemp("corpus")
    table = pq.read_table(shared_data / "enwiki/enwiki-sample.parquet")
    pq.write_table(table, folder / "wiki.parquet", row_group_size=9, compression="zstd")
    return [str(folder / "wiki.parquet"), str(shared_data / "tinystories/train-head.jsonl"),
            str(shared_data / "tinystories/train-lower.jsonl.zst"), str(shared_data / "tinystories/valid-head.txt")]


def options(out: Path) -> list[str]:
    return ["--tokenizer", "gpt2", "--out", str(out), "--task-mb", "0.25", "--shard-tokens", "150000",
            "--sample-tokens", "20000", "--val-fraction", "0.05", "--progress", "false"]


def shard_bytes(prep: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(prep.glob("*.tar"))}


def comparable(manifest: dict) -> dict:
    return {k: v for k, v in manifest.items() if k != "timings"}


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory) -> Path:
    """An uninterrupted single-worker run."""
    out = tmp_path_factory.mktemp("ref") / "prep"
    assert prep_main(["tokenize", "--input", *corpus, *options(out), "--workers", "1"]) == 0
    return out


def test_one_and_two_workers_write_identical_shards(corpus, reference, tmp_path):
    manifest = read_manifest(reference)
    assert manifest["tasks"] >= 10 and len(manifest["shards"]) >= 10
    out = tmp_path / "prep"
    assert prep_main(["tokenize", "--input", *corpus, *options(out), "--workers", "2"]) == 0
    assert shard_bytes(out) == shard_bytes(reference)
    assert comparable(read_manifest(out)) == comparable(manifest)


def test_slurm_style_tasks_by_index_in_any_order(corpus, reference, tmp_path):
    out = tmp_path / "prep"
    plan = plan_tasks(corpus, out, tokenizer="gpt2", task_mb=0.25, shard_tokens=150000, sample_tokens=20000,
                      val_fraction=0.05)
    n = len(plan["tasks"])
    with pytest.raises(PrepError, match=f"{n} of {n} tasks unfinished"):
        finalize(out)
    for index in reversed(range(1, n)):  # array elements run in any order
        run_task(out, index)
    assert pending_tasks(out) == [0]
    proc = subprocess.run([sys.executable, "-m", "data_prep", "run-task", str(out), "0"], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    again = run_task(out, 0)  # idempotent: a finished task is not redone
    assert again == json.loads((out / "tasks" / "00000.json").read_text())
    proc = subprocess.run([sys.executable, "-m", "data_prep", "finalize", str(out)], cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert shard_bytes(out) == shard_bytes(reference)
    assert comparable(read_manifest(out)) == comparable(read_manifest(reference))


def test_sigkill_then_resume_equals_uninterrupted(corpus, reference, tmp_path):
    out = tmp_path / "prep"
    cmd = [sys.executable, "-m", "data_prep", "tokenize", "--input", *corpus, *options(out), "--workers", "2"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)  # its own process group: kill the pool workers too
    deadline = time.time() + 120
    while not list((out / "tasks").glob("*.json")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)  # like a node failure: no cleanup runs
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    pending = pending_tasks(out)
    assert pending, "the run finished before it could be killed"
    assert not (out / "manifest.json").exists()
    # without --resume the directory is refused rather than silently mixed
    assert prep_main(["tokenize", "--input", *corpus, *options(out), "--workers", "2"]) == 2  # bad input (run_cli)
    # a stray partial shard of an unfinished task must not survive the resume
    (out / f"train-{pending[-1]:05d}-00077.tar").write_bytes(b"partial")
    assert prep_main(["tokenize", "--input", *corpus, *options(out), "--workers", "2", "--resume"]) == 0
    assert shard_bytes(out) == shard_bytes(reference)
    assert comparable(read_manifest(out)) == comparable(read_manifest(reference))
    assert not list(out.glob(".*.tmp"))
    assert prep_main(["verify", str(out)]) == 0


def test_resume_with_other_options_is_refused(corpus, reference, tmp_path, capsys):
    argv = ["tokenize", "--input", *corpus, *options(reference), "--resume", "--val-fraction", "0.2"]
    assert prep_main(argv) == 2
    assert "different options than the interrupted run: val_fraction 0.05 -> 0.2" in capsys.readouterr().err


def _pool_workers(pid: int) -> list[int]:
    """Process-pool worker pids among the children of `pid` (Linux /proc)."""
    workers = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and b"spawn_main" in cmdline and b"resource_tracker" not in cmdline:
            workers.append(int(entry.name))
    return workers


def test_a_killed_worker_fails_the_run_and_resume_repairs_it(corpus, reference, tmp_path):
    """An OOM-killed worker must not hang the pool: the run fails naming unfinished tasks; --resume then
    gives the uninterrupted result."""
    out = tmp_path / "prep"
    cmd = [sys.executable, "-m", "data_prep", "tokenize", "--input", *corpus, *options(out), "--workers", "2"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.time() + 60
        while not (workers := _pool_workers(proc.pid)) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        assert workers, "no pool worker appeared"
        os.kill(workers[0], signal.SIGKILL)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 2  # PrepError: exit 2 through run_cli
    assert "a worker process died" in err and "rerun with --resume" in err
    assert prep_main(["tokenize", "--input", *corpus, *options(out), "--workers", "2", "--resume"]) == 0
    assert shard_bytes(out) == shard_bytes(reference)
