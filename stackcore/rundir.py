"""The run-directory contract, written by `pretrain` and read by `eval` and `slurm status` (torch-free).

    runs/NAME/config.toml      fully resolved run config (+ git commit, package versions in its header)
    runs/NAME/metrics.jsonl    one JSON object per logged step (see METRIC_KEYS)
    runs/NAME/status.json      {state, step, last_loss, error, time} (see STATES)
    runs/NAME/error.txt        the traceback of a failed run
    runs/NAME/run.lock         held (flock) by the live run's main rank; names its pid and host
    runs/NAME/tb/              tensorboard events (same scalars; FLOPs and tokens as extra x-axes)
    runs/NAME/checkpoints/     DeepSpeed checkpoints (+ `latest` pointer), exports
    runs/NAME/slurm/           submitit logs and job ids when launched through Slurm
    SWEEP_DIR/sweep.json       a sweep's runs (name, run_dir, argv, job_id), written when it is submitted
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
import tomllib
from pathlib import Path
from typing import Any, Literal

from stackcore.atomic import atomic_write_json
from stackcore.errors import UserError

CONFIG = "config.toml"
METRICS = "metrics.jsonl"
STATUS = "status.json"
ERROR = "error.txt"
LOCK = "run.lock"
TB = "tb"
CHECKPOINTS = "checkpoints"
SLURM = "slurm"
SWEEP_FILE = "sweep.json"  # in a sweep directory, beside its run directories

RunState = Literal["running", "preempted", "completed", "failed"]
STATES: tuple[str, ...] = ("running", "preempted", "completed", "failed")

# Keys of a metrics.jsonl row. Every row carries step/tokens/flops/wall_s/device; train rows add the
# training scalars; evaluation rows add val_* and val_set (the validation set's identity).
METRIC_KEYS = ("step", "tokens", "flops", "wall_s", "device", "train_loss", "val_loss", "val_bpb", "lr",
               "grad_norm", "tokens_per_s", "mfu", "peak_mem_mb", "skipped_steps")
ROW_AXES = ("step", "tokens", "flops", "wall_s")  # the x-axes every row has


def read_config(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a run directory (no {CONFIG}); pass a directory made by pretrain.train")
    return tomllib.loads(path.read_text())


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """All rows of metrics.jsonl; a torn last line (a killed writer) is ignored, other bad lines raise."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return []
    rows = []
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise ValueError(f"{path}:{i + 1}: not JSON; the metrics file is corrupt") from None
    return rows


def write_status(run_dir: str | Path, state: RunState, step: int, last_loss: float | None,
                 error: str | None = None) -> None:
    """Main rank only: status.json = {state, step, last_loss, error, time} (read by slurm status, sweeps)."""
    if state not in STATES:
        raise ValueError(f"run state must be one of {STATES}, got {state!r}")
    atomic_write_json(Path(run_dir) / STATUS, {"state": state, "step": step, "last_loss": last_loss,
                                               "error": error, "time": time.time()})


def read_status(run_dir: str | Path) -> dict[str, Any] | None:
    """status.json of a run, or None when the run has not written one yet."""
    path = Path(run_dir) / STATUS
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc}); status.json is written atomically, so the file was "
                         "changed by hand: delete it, the run rewrites it") from None


class RunLockedError(UserError):
    """Another live process holds the run directory."""


class RunLock:
    """An exclusive `fcntl.flock` on runs/NAME/run.lock, held by the main rank for the whole run.

    The kernel drops a flock when its holder dies (even by SIGKILL), so a lock left by a dead process is
    simply taken over; the file's text (pid, host) only serves the message of a refused second run."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / LOCK
        self._fh = None

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown process"
            fh.close()
            raise RunLockedError(f"{self.path.parent}: run directory in use by {holder}; wait for it to end, "
                                 "stop it, or pick another --run.name") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on host {socket.gethostname()}\n")
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
