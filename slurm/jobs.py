"""Job records in a run directory: `runs/NAME/slurm/jobs.jsonl`, one JSON object per event.

    {"event": "submitted", "job_id": "12", "time": ...}                      (launcher)
    {"event": "started", "job_id": "12", "restart": 0, "host": "vm", ...}    (rank 0 of each allocation)
    {"event": "requeued"|"completed"|"failed", "job_id": "12", ...}         (rank 0 at the end of one)

`slurm status` reads these beside the trainer's metrics. Appends are whole lines written with one
`write` call (O_APPEND), so concurrent writers never interleave within a line.
"""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from slurm.accounting import ACTIVE_STATES, job_state, sacct_states
from stackcore import rundir
from stackcore.atomic import atomic_write_bytes

JOBS_FILE = "jobs.jsonl"
FAILURE_FILE = "failure.txt"  # the traceback of the last failed allocation


def slurm_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / rundir.SLURM


def record(run_dir: str | Path, event: str, **fields: Any) -> None:
    row = {"event": event, "time": round(time.time(), 3), "host": socket.gethostname(), **fields}
    path = slurm_dir(run_dir) / JOBS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(row, sort_keys=True) + "\n").encode())
    finally:
        os.close(fd)


def read(run_dir: str | Path) -> list[dict[str, Any]]:
    """All job events of a run; a torn last line (a killed writer) is ignored."""
    path = slurm_dir(run_dir) / JOBS_FILE
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def job_ids(run_dir: str | Path) -> list[str]:
    """Distinct Slurm job ids this run has used, in order of first appearance."""
    seen: list[str] = []
    for row in read(run_dir):
        jid = str(row.get("job_id", ""))
        if jid and jid not in seen:
            seen.append(jid)
    return seen


def requeue_count(run_dir: str | Path) -> int:
    """Requeues of the run: those it asked for, or, when Slurm requeued a job behind its back (node
    failure), the restart counts its allocations saw -- whichever is larger, per job id."""
    total = 0
    for jid in job_ids(run_dir):
        rows = [r for r in read(run_dir) if str(r.get("job_id")) == jid]
        asked = sum(1 for r in rows if r.get("event") == "requeued")
        seen = max((int(r.get("restart") or 0) for r in rows if r.get("event") == "started"), default=0)
        total += max(asked, seen)
    return total


def active_job(run_dir: str | Path) -> str:
    """The run's latest Slurm job id when Slurm says it is still queued or running, else "": submitting a
    second job into the same run directory would make two trainers write one run."""
    ids = job_ids(run_dir)
    if not ids:
        return ""
    state = job_state(ids[-1]) or sacct_states([ids[-1]]).get(ids[-1], "")
    return ids[-1] if state in ACTIVE_STATES else ""


def write_failure(run_dir: str | Path, text: str) -> Path:
    path = slurm_dir(run_dir) / FAILURE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, text.encode())
    return path
