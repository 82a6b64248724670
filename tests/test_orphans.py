"""A SIGKILL of the torchrun launcher alone stops its ranks (and their DataLoader workers): they used to
live on as orphans that kept training and writing to the run directory. Real processes: torchrun, two
ranks, one loader worker each; only the launcher is killed."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from stackcore.rundir import read_metrics
from train_fixtures import REPO_ROOT, child_env, prepped_corpus, run_args, torchrun

ORPHAN_DEADLINE_S = 15.0


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (read from /proc before the launcher dies: orphans lose the link)."""
    out, todo = [], [pid]
    while todo:
        for task in Path(f"/proc/{todo.pop()}/task").glob("*"):
            try:
                kids = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            out += kids
            todo += kids
    return out


def alive(pid: int, cmd_part: bytes) -> bool:
    """pid still runs the process we started (not a zombie, not a reused pid)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z" and cmd_part in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def wait_for_rank_processes(launcher: subprocess.Popen, run_dir: Path, timeout: float = 240.0) -> list[int]:
    """Ranks and workers, once the run has trained a step (its setup is over, it is writing)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert launcher.poll() is None, f"run ended early: {launcher.stderr.read()[-2000:]}"
        if any(r.get("step", 0) >= 1 for r in read_metrics(run_dir)):
            return descendants(launcher.pid)
        time.sleep(0.2)
    raise AssertionError("the run trained no step in time")


def test_killing_torchrun_alone_stops_every_rank_and_worker(tmp_path_factory, tmp_path):
    args = run_args(prepped_corpus(tmp_path_factory), tmp_path, "orphans", "--train.steps", "200",
                    "--data.workers", "1", "--log.every", "1", "--checkpoint.every", "0",
                    "--train.debug_step_sleep_s", "0.3")
    launcher = subprocess.Popen(torchrun(2, args), cwd=REPO_ROOT, env=child_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
    procs: list[int] = []
    try:
        procs = wait_for_rank_processes(launcher, tmp_path / "orphans")
        ranks = [p for p in procs if b"pretrain.train" in Path(f"/proc/{p}/cmdline").read_bytes()]
        assert len(ranks) >= 4, f"expected 2 ranks + 2 loader workers under torchrun, got {procs}"
        os.kill(launcher.pid, signal.SIGKILL)  # the launcher only: it gets no chance to stop its ranks
        launcher.wait(timeout=30)
        deadline = time.time() + ORPHAN_DEADLINE_S
        while time.time() < deadline and any(alive(p, b"pretrain.train") for p in ranks):
            time.sleep(0.2)
        survivors = [p for p in ranks if alive(p, b"pretrain.train")]
        assert not survivors, f"processes of the run alive {ORPHAN_DEADLINE_S:.0f} s after the launcher died"
        steps = max(r["step"] for r in read_metrics(tmp_path / "orphans"))
        assert steps < 200  # they stopped, not finished
    finally:
        for pid in [launcher.pid, *procs]:  # whatever is left, by pid (never by name)
            if alive(pid, b"pretrain.train") or alive(pid, b"torch.distributed.run"):
                os.kill(pid, signal.SIGKILL)
