"""The loop and its callbacks: time accounting under a fake clock (wall_s = summed training-step time,
on every row), the device on every row, the console a person sees, and the run-directory lock (real
processes: a second run on a live run's directory exits 2 naming the holder; a dead holder's lock is
taken over)."""
from __future__ import annotations

import signal
import socket
import subprocess
import time

import pytest

from pretrain.callbacks import Callback
from pretrain.config import RunConfig
from pretrain.train import EXIT_BAD_INPUT, run
from stackcore.config import load_cli
from stackcore.rundir import LOCK, read_metrics, read_status
from train_fixtures import PY, REPO_ROOT, child_env, prepped_corpus, run_args

STEP_S = 0.25  # fake seconds per training step (exact in binary, so sums are exact)


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


class SlowAroundSteps(Callback):
    """Validation, checkpoints and logging 'take' 100 fake seconds after every step: none of it may count
    as training time."""

    def __init__(self, clock: FakeClock):
        self.clock = clock

    def on_step(self, loop) -> None:
        self.clock.now += 100.0


def test_wall_s_is_the_summed_step_time_on_every_row(tmp_path_factory, tmp_path, capsys):
    corpus = prepped_corpus(tmp_path_factory)
    cfg = load_cli(RunConfig, run_args(corpus, tmp_path, "clock", "--train.steps", "10", "--log.every", "5",
                                       "--log.eval_every", "8", "--log.stats_every", "0", "--checkpoint.every", "4",
                                       "--train.debug_step_sleep_s", str(STEP_S), "--log.quiet", "true",
                                       "--log.peak_flops", "1e9"))
    clock = FakeClock()
    assert run(cfg, clock=clock, sleep=clock.sleep, extra_callbacks=[SlowAroundSteps(clock)])["state"] == "completed"
    rows = read_metrics(tmp_path / "clock")
    assert [r["step"] for r in rows] == [5, 8, 10]  # 8 only evaluates: it still has every axis
    tokens_per_step = 4 * 32
    for row in rows:
        assert row["wall_s"] == row["step"] * STEP_S
        assert row["device"] == {"name": "cpu", "count": 1}
        assert row["tokens"] == row["step"] * tokens_per_step
    assert rows[0]["tokens_per_s"] == tokens_per_step / STEP_S  # 5 steps in 5 x 0.25 s
    assert rows[2]["tokens_per_s"] == tokens_per_step / STEP_S  # after an evaluation and two saves
    flops_per_token = rows[0]["flops"] / rows[0]["tokens"]
    assert rows[0]["mfu"] == pytest.approx(flops_per_token * rows[0]["tokens_per_s"] / 1e9, rel=1e-12)
    assert rows[0]["mfu_flops"] == "executed"  # the row says which FLOP count MFU divides
    assert "val_loss" in rows[1] and "train_loss" not in rows[1]
    assert capsys.readouterr().out == ""  # log.quiet


def _wait_for(predicate, timeout_s: float, what: str, proc=None):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: the process ended first (exit {proc.returncode})")
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout_s} s")


def test_run_lock_console_and_takeover(tmp_path_factory, tmp_path):
    corpus = prepped_corpus(tmp_path_factory)
    args = run_args(corpus, tmp_path, "locked", "--train.steps", "40", "--log.every", "1")
    run_dir, out = tmp_path / "locked", tmp_path / "first.out"
    with out.open("w") as fh:
        first = subprocess.Popen([PY, "-m", "pretrain.train", *args, "--train.debug_step_sleep_s", "1.0"],
                                 cwd=REPO_ROOT, env=child_env(), stdout=fh, stderr=subprocess.STDOUT)
    try:
        _wait_for(lambda: "step  2/40" in out.read_text(), 180, "the first run's step lines", first)
        assert f"pid {first.pid} on host" in (run_dir / LOCK).read_text()
        second = subprocess.run([PY, "-m", "pretrain.train", *args], cwd=REPO_ROOT, env=child_env(),
                                capture_output=True, text=True, timeout=300)
        assert second.returncode == EXIT_BAD_INPUT, second.stderr[-2000:]
        assert f"in use by pid {first.pid} on host {socket.gethostname()}" in second.stderr
        # the first run went on undisturbed: alive, running, no error recorded by the refused one
        assert first.poll() is None and read_status(run_dir)["state"] == "running"
        assert not (run_dir / "error.txt").exists()
        lines = out.read_text()
        assert "starting; mixer d32x2" in lines and "Setting accelerator" not in lines
        assert "loss " in lines and "tok/s" in lines and "ETA" in lines
    finally:
        first.send_signal(signal.SIGKILL)  # a dead holder: the kernel drops its flock
        first.wait(timeout=60)
    third = subprocess.run([PY, "-m", "pretrain.train", *args, "--train.steps", "4"], cwd=REPO_ROOT,
                           env=child_env(), capture_output=True, text=True, timeout=300)
    assert third.returncode == 0, third.stderr[-3000:]
    assert read_status(run_dir)["state"] == "completed"
    assert "checkpoint step 4 ->" in third.stdout and "completed: 4/4 steps, best val loss" in third.stdout
    assert f"tensorboard --logdir {run_dir / 'tb'}" in third.stdout


def test_locked_run_dir_stops_every_rank(tmp_path_factory, tmp_path):
    """Under torchrun the main rank's refusal reaches the other rank (no rank left waiting in a
    collective): the job ends with the holder named. The holder here is this test process."""
    import os

    from stackcore.rundir import RunLock
    from train_fixtures import torchrun
    args = run_args(prepped_corpus(tmp_path_factory), tmp_path, "held", "--train.steps", "2")
    with RunLock(tmp_path / "held"):
        done = subprocess.run(torchrun(2, args), cwd=REPO_ROOT, env=child_env(), capture_output=True, text=True,
                              timeout=300)
    assert done.returncode != 0
    assert f"in use by pid {os.getpid()} on host {socket.gethostname()}" in done.stdout + done.stderr
    assert not (tmp_path / "held" / "error.txt").exists() and read_status(tmp_path / "held") is None
