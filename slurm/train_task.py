"""What runs in every task of a Slurm training job: rendezvous from the Slurm environment, then the
same entry as `python -m pretrain.train`, then requeue-or-finish.

Preemption and time limits: Slurm signals every task (SIGUSR1 `signal_lead_s` ahead of the limit,
SIGTERM on `scontrol requeue` / preemption). The trainer turns that into one collective DeepSpeed
checkpoint on all ranks and returns EXIT_PREEMPTED; rank 0 then asks Slurm to requeue the job (same
job id, same run directory), and every rank exits without a submitit result, so the requeued
allocation runs this task again and the trainer resumes from the checkpoint (`checkpoint.resume=auto`).
A cancelled job (scancel also sends SIGTERM) keeps its checkpoint and stays cancelled.
Any other ending is final: a failure writes its traceback to `runs/NAME/slurm/failure.txt` and raises,
so submitit hands it to the launcher and the job is not requeued.
"""
from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from slurm import jobs
from slurm.accounting import job_state, sacct_states
from stackcore import rundir
from stackcore.errors import EXIT_PREEMPTED

DEFAULT_ENTRY = "pretrain.train:main"
# Job states (scontrol or sacct) in which a checkpointed task must not ask for a requeue, and those in
# which Slurm is requeuing the job already.
CANCELLED_STATES = ("CANCELLED", "COMPLETED", "FAILED", "TIMEOUT", "NODE_FAIL", "BOOT_FAIL", "DEADLINE",
                    "OUT_OF_MEMORY")
REQUEUING_STATES = ("REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "PENDING")
# Signals that arrived before the trainer installed its own handlers; replayed once it has.
_early_signals: list[int] = []


def _resolve(entry: str) -> Callable[[list[str]], int]:
    module, _, name = entry.partition(":")
    return getattr(importlib.import_module(module), name)


def set_distributed_env(env: Any) -> dict[str, str]:
    """MASTER_ADDR/PORT, RANK, WORLD_SIZE, LOCAL_RANK from submitit's JobEnvironment (torch.distributed's
    env:// rendezvous). The port is derived from the job id, so two jobs on one node do not collide."""
    job_id = int(os.environ.get("SLURM_JOB_ID", "0"))
    values = {
        "MASTER_ADDR": env.hostnames[0],
        "MASTER_PORT": str(20000 + job_id % 20000),
        "RANK": str(env.global_rank),
        "WORLD_SIZE": str(env.num_tasks),
        "LOCAL_RANK": str(env.local_rank),
        "LOCAL_WORLD_SIZE": str(max(1, env.num_tasks // env.num_nodes)),
        "NODE_RANK": str(env.node),
    }
    os.environ.update(values)
    return values


def requeue_decision(job_id: str, tries: int = 10) -> tuple[str, str]:
    """After a checkpoint on a signal: "requeue" (time-limit warning: the job still runs), "already"
    (Slurm requeues it itself: scontrol requeue, preemption) or "cancelled" (scancel also sends SIGTERM,
    and even a finished job can be requeued, so a cancelled job must not be brought back). A COMPLETING
    job is ambiguous in scontrol; accounting (sacct) tells CANCELLED from REQUEUED, give it a moment."""
    ctl = acct = ""
    for _ in range(tries):
        ctl, acct = job_state(job_id), sacct_states([job_id]).get(job_id, "")
        if acct == "CANCELLED" or ctl in CANCELLED_STATES:
            return "cancelled", acct or ctl
        if acct in REQUEUING_STATES or ctl in REQUEUING_STATES:
            return "already", acct or ctl
        if ctl == "RUNNING":
            return "requeue", ctl
        time.sleep(0.3)
    return "requeue", ctl or acct


def _note_signal(signum: int, frame: Any) -> None:
    # Until the trainer installs its handlers (and after it restores them), a signal must neither kill
    # the task nor reach submitit's handler, which would requeue behind the trainer's back.
    _early_signals.append(signum)


def _replay_early_signals(stop: threading.Event) -> None:
    """A signal that lands while the trainer is still importing/starting (Slurm may send the time-limit
    warning up to a minute early) is re-sent to this process once the trainer's own handler is in
    place, so the trainer still checkpoints and exits for a requeue instead of running into the limit."""
    while not stop.wait(0.2):
        while _early_signals:
            signum = _early_signals[0]
            handler = signal.getsignal(signum)
            if handler in (_note_signal, signal.SIG_DFL, signal.SIG_IGN, None):
                break  # the trainer is not listening yet
            _early_signals.pop(0)
            os.kill(os.getpid(), signum)


def _failure_from_run_dir(run_dir: Path) -> str:
    """The trainer's own account of a failure: error.txt (its traceback), else status.json's error."""
    try:
        text = (run_dir / rundir.ERROR).read_text()
        if text.strip():
            return text
    except OSError:
        pass
    try:
        status = rundir.read_status(run_dir) or {}
    except (OSError, ValueError):
        return ""
    return str(status.get("error") or "")


def _log_tail(env: Any, lines: int = 40) -> str:
    """The end of this task's stderr log: where the trainer printed an error it handled itself."""
    try:
        text = Path(env.paths.stderr).read_text(errors="replace")
    except (OSError, AttributeError):
        return ""
    return "\n".join(text.splitlines()[-lines:])


def link_logs(env: Any, run_dir: Path) -> None:
    """When the submitit folder is elsewhere (a sweep's array shares one), link this task's log files into
    runs/NAME/slurm/ so every run directory holds its own logs."""
    target = jobs.slurm_dir(run_dir)
    for log in (Path(env.paths.stdout), Path(env.paths.stderr)):
        link = target / log.name
        if log.parent.resolve() == target.resolve() or link.exists() or link.is_symlink():
            continue
        try:
            target.mkdir(parents=True, exist_ok=True)
            link.symlink_to(log)
        except OSError:
            pass  # logs stay readable in the submitit folder


class TrainTask:
    """Picklable job function: `TrainTask(argv, run_dir)()` in each Slurm task."""

    def __init__(self, argv: list[str], run_dir: str | Path, max_requeues: int, entry: str = DEFAULT_ENTRY,
                 preempted_code: int | None = None):
        self.argv = list(argv)
        self.preempted_code = preempted_code  # None: stackcore.errors.EXIT_PREEMPTED, the trainer's code
        self.run_dir = str(Path(run_dir).resolve())
        self.max_requeues = max_requeues
        self.entry = entry

    def __call__(self) -> dict[str, Any]:
        import submitit

        env = submitit.JobEnvironment()
        for sig in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM):
            signal.signal(sig, _note_signal)
        dist = set_distributed_env(env)
        rank, run_dir = env.global_rank, Path(self.run_dir)
        restart = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
        if rank == 0:
            jobs.record(run_dir, "started", job_id=env.job_id, restart=restart, world_size=env.num_tasks,
                        master=f"{dist['MASTER_ADDR']}:{dist['MASTER_PORT']}", argv=self.argv)
        link_logs(env, run_dir)
        stop_replay = threading.Event()
        threading.Thread(target=_replay_early_signals, args=(stop_replay,), daemon=True).start()
        try:
            rc = _resolve(self.entry)(list(self.argv))
        except BaseException as exc:  # noqa: BLE001 - recorded, then re-raised unchanged
            if isinstance(exc, SystemExit) and exc.code in (0, None):
                rc = 0
            elif isinstance(exc, SystemExit) and isinstance(exc.code, int):
                rc = exc.code
            else:
                self._fail(rank, env.job_id, traceback.format_exc())
                raise
        finally:
            stop_replay.set()
        rc = int(rc or 0)
        if rc == (self.preempted_code if self.preempted_code is not None else EXIT_PREEMPTED):
            self._requeue(rank, env.job_id, restart)
        if rc != 0:
            detail = _failure_from_run_dir(run_dir) or _log_tail(env)
            message = (f"training exited with code {rc} in Slurm job {env.job_id} (rank {rank})"
                       + (f":\n{detail}" if detail else f"; see {run_dir}/slurm/ logs"))
            self._fail(rank, env.job_id, message)
            raise RuntimeError(message)
        if rank == 0:
            jobs.record(run_dir, "completed", job_id=env.job_id, restart=restart)
        return {"run_dir": self.run_dir, "job_id": env.job_id, "rank": rank, "restarts": restart}

    def _fail(self, rank: int, job_id: str, text: str) -> None:
        # Rank 0 always records; another rank only when it fails alone (srun then stops the others).
        if rank == 0 or not (jobs.slurm_dir(self.run_dir) / jobs.FAILURE_FILE).exists():
            path = jobs.write_failure(self.run_dir, f"rank {rank}:\n{text}")
            jobs.record(self.run_dir, "failed", job_id=job_id, rank=rank, failure=str(path))

    def _requeue(self, rank: int, job_id: str, restart: int) -> None:
        """Never returns: requeue (rank 0) and leave without a result, or fail past max_requeues."""
        if restart >= self.max_requeues:
            message = (f"preempted/timed out after {restart} requeues (slurm.max_requeues={self.max_requeues}); "
                       f"the last checkpoint is in {self.run_dir}/checkpoints: resubmit to continue")
            self._fail(rank, job_id, message)
            raise RuntimeError(message)
        if rank == 0:
            decision, state = requeue_decision(job_id)
            if decision == "cancelled":
                jobs.record(self.run_dir, "cancelled", job_id=job_id, restart=restart, state=state)
            else:
                jobs.record(self.run_dir, "requeued", job_id=job_id, restart=restart, state=state)
            if decision == "requeue":
                done = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=60)
                if done.returncode != 0:
                    print(f"[slurm] scontrol requeue {job_id}: {done.stderr.strip()}", file=sys.stderr, flush=True)
            print(f"[slurm] checkpoint saved; job {job_id} was {state}: {decision}", file=sys.stderr, flush=True)
        # SystemExit skips submitit's result pickle: the launcher keeps waiting for the requeued job.
        # Status 0, because srun runs with --kill-on-bad-exit: a non-zero rank would kill rank 0
        # before it has asked for the requeue.
        raise SystemExit(0)
