"""Interrupted runs resume exactly: a 2-rank run killed by SIGKILL resumes from its last periodic
checkpoint; a run sent SIGTERM saves its own checkpoint and exits with EXIT_PREEMPTED. In both cases the
per-step losses after the resume equal those of an uninterrupted run bit for bit (fp32, CPU)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from pretrain.train import EXIT_PREEMPTED
from stackcore.rundir import read_metrics
from train_fixtures import PY, REPO_ROOT, child_env, losses, prepped_corpus, reference_run, run_args, torchrun


def wait_for(predicate, proc, timeout=240.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        assert proc.poll() is None, f"run ended early (rc {proc.returncode}): {proc.stderr.read()[-2000:]}"
        time.sleep(0.1)
    raise AssertionError("timed out waiting for the run")


def latest(run_dir: Path) -> str:
    path = run_dir / "checkpoints" / "latest"
    return path.read_text().strip() if path.is_file() else ""


def start_slow_two_rank_run(tmp_path_factory, tmp_path, name: str, checkpoint_every: int):
    """A 6-step ZeRO-2 run on 2 ranks (torchrun), slowed so a test can interrupt it mid-run."""
    args = run_args(prepped_corpus(tmp_path_factory), tmp_path, name, "--deepspeed.zero_stage", "2",
                    "--train.steps", "6", "--checkpoint.every", str(checkpoint_every))
    proc = subprocess.Popen(torchrun(2, args + ["--train.debug_step_sleep_s", "0.6"]), cwd=REPO_ROOT,
                            env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    return args, tmp_path / name, proc


def test_sigkill_two_ranks_then_resume_is_exact(tmp_path_factory, tmp_path):
    reference = losses(reference_run(tmp_path_factory, 2, 2))
    args, run_dir, proc = start_slow_two_rank_run(tmp_path_factory, tmp_path, "killed", checkpoint_every=2)
    wait_for(lambda: latest(run_dir) == "step00000002", proc)
    os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both ranks, mid-step, no chance to clean up
    proc.wait(timeout=60)
    assert max(r["step"] for r in read_metrics(run_dir)) < 6
    assert json.loads((run_dir / "status.json").read_text())["state"] == "running"

    done = subprocess.run(torchrun(2, args), cwd=REPO_ROOT, env=child_env(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    resumed = losses(run_dir)
    assert sorted(resumed) == list(range(1, 7))  # rows past the checkpoint were replaced, not duplicated
    assert [resumed[s] for s in range(3, 7)] == [reference[s] for s in range(3, 7)]
    assert json.loads((run_dir / "status.json").read_text())["state"] == "completed"


def test_sigterm_saves_exits_preempted_and_resumes_exactly(tmp_path_factory, tmp_path):
    reference = losses(reference_run(tmp_path_factory, 1, 0))
    args = run_args(prepped_corpus(tmp_path_factory), tmp_path, "term", "--train.steps", "6",
                    "--checkpoint.every", "0")
    run_dir = tmp_path / "term"
    proc = subprocess.Popen([PY, "-m", "pretrain.train", *args, "--train.debug_step_sleep_s", "1.0"],
                            cwd=REPO_ROOT, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    wait_for(lambda: any(r["step"] >= 2 for r in read_metrics(run_dir)), proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == EXIT_PREEMPTED
    status = json.loads((run_dir / "status.json").read_text())
    saved = status["step"]
    assert status["state"] == "preempted" and 2 <= saved < 6 and latest(run_dir) == f"step{saved:08d}"

    done = subprocess.run([PY, "-m", "pretrain.train", *args], cwd=REPO_ROOT, env=child_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    resumed = losses(run_dir)
    assert [resumed[s] for s in range(saved + 1, 7)] == [reference[s] for s in range(saved + 1, 7)]
    assert [resumed[s] for s in range(1, saved + 1)] == [reference[s] for s in range(1, saved + 1)]


def rank_pids(launcher_pid: int) -> dict[int, int]:
    """{rank: pid} of torchrun's worker processes (read from /proc: their RANK variable)."""
    out = {}
    for tid in Path(f"/proc/{launcher_pid}/task").iterdir():
        for child in (tid / "children").read_text().split():
            env = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
            rank = [e for e in env if e.startswith(b"RANK=")]
            if rank:
                out[int(rank[0][5:])] = int(child)
    return out


def test_signal_to_one_rank_makes_every_rank_save_the_same_step(tmp_path_factory, tmp_path):
    reference = losses(reference_run(tmp_path_factory, 2, 2))
    args, run_dir, proc = start_slow_two_rank_run(tmp_path_factory, tmp_path, "usr1", checkpoint_every=0)
    wait_for(lambda: any(r["step"] >= 2 for r in read_metrics(run_dir)), proc)
    os.kill(rank_pids(proc.pid)[1], signal.SIGUSR1)  # only rank 1 hears it (as a node-local signal would)
    proc.wait(timeout=120)
    status = json.loads((run_dir / "status.json").read_text())
    saved = status["step"]
    assert status["state"] == "preempted" and latest(run_dir) == f"step{saved:08d}" and saved < 6
    done = subprocess.run(torchrun(2, args), cwd=REPO_ROOT, env=child_env(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    resumed = losses(run_dir)
    assert [resumed[s] for s in range(1, 7)] == [reference[s] for s in range(1, 7)]


def test_zero0_checkpoint_of_two_ranks_resumes_in_one_process(tmp_path_factory, tmp_path, capsys):
    import shutil

    from pretrain.train import main
    one = losses(reference_run(tmp_path_factory, 1, 0))
    shutil.copytree(reference_run(tmp_path_factory, 2, 0), tmp_path / "ref")
    ckpt = tmp_path / "ref" / "checkpoints" / "step00000004"
    args = run_args(prepped_corpus(tmp_path_factory), tmp_path, "ref", "--train.steps", "6",
                    "--checkpoint.every", "2", "--checkpoint.resume", str(ckpt))
    assert main(args) == 0
    resumed = losses(tmp_path / "ref")
    assert all(abs(resumed[s] - one[s]) < 1e-5 for s in (5, 6))  # same global batches at another world size
    # ZeRO 1-3 (sharded optimizer states) at another world size: tests/test_elastic_resume.py
