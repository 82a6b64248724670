"""`python -m slurm status DIR`: one line per run -- state, Slurm job, last step, last loss, requeues.

DIR is a run directory, a sweep directory (its sweep.json lists the runs) or any folder holding run
directories. The state comes from Slurm's accounting (sacct) for the run's latest job when Slurm is
reachable, else from the run's own job records (runs/NAME/slurm/jobs.jsonl).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from slurm import jobs
from slurm.accounting import sacct_states
from stackcore import rundir

_EVENT_STATE = {"submitted": "PENDING", "started": "RUNNING", "requeued": "REQUEUED", "completed": "COMPLETED",
                "cancelled": "CANCELLED", "failed": "FAILED"}


def find_runs(path: str | Path) -> list[Path]:
    path = Path(path)
    if (path / rundir.SWEEP_FILE).is_file():
        return [Path(r["run_dir"]) for r in json.loads((path / rundir.SWEEP_FILE).read_text())["runs"]]
    if _is_run(path):
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such directory; pass a run or sweep directory")
    return sorted(p for p in path.iterdir() if p.is_dir() and _is_run(p))


def _is_run(path: Path) -> bool:
    return (path / rundir.CONFIG).is_file() or (path / rundir.SLURM / jobs.JOBS_FILE).is_file()


def run_row(run_dir: Path, slurm_states: dict[str, str]) -> dict[str, Any]:
    events = jobs.read(run_dir)
    last_job = next((str(e["job_id"]) for e in reversed(events) if e.get("job_id")), "")
    state = _EVENT_STATE.get(events[-1]["event"], "?") if events else "-"
    if last_job and last_job in slurm_states and state not in ("COMPLETED", "FAILED", "CANCELLED"):
        state = slurm_states[last_job]  # the job records cannot see a pending requeue or a kill -9
    metrics = rundir.read_metrics(run_dir) if run_dir.is_dir() else []
    trained = [m for m in metrics if m.get("train_loss") is not None]
    last = trained[-1] if trained else {}
    if not events:  # trained without Slurm: the trainer's own status.json, if any
        state = _local_state(run_dir, bool(metrics))
    return {"run": run_dir.name, "state": state, "job": last_job or "-",
            "step": last.get("step", "-"), "loss": last.get("train_loss"), "requeues": jobs.requeue_count(run_dir)}


def _local_state(run_dir: Path, has_metrics: bool) -> str:
    try:
        return "LOCAL " + str((rundir.read_status(run_dir) or {})["state"]).upper()
    except (OSError, ValueError, KeyError):
        return "LOCAL" if has_metrics else "-"


def status(path: str | Path) -> list[dict[str, Any]]:
    runs = find_runs(path)
    ids = sorted({str(e["job_id"]) for r in runs for e in jobs.read(r) if e.get("job_id")})
    states = sacct_states(ids)
    return [run_row(r, states) for r in runs]


def format_table(rows: list[dict[str, Any]]) -> str:
    header = ("run", "state", "job", "step", "loss", "requeues")
    cells = [[str(r["run"]), str(r["state"]), str(r["job"]), str(r["step"]),
              "-" if r["loss"] is None else f"{r['loss']:.4f}", str(r["requeues"])] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: python -m slurm status RUN_OR_SWEEP_DIR", file=sys.stderr)
        return 2
    try:
        rows = status(argv[0])
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not rows:
        print(f"{argv[0]}: no runs found (a run directory has config.toml or slurm/jobs.jsonl)")
        return 1
    print(format_table(rows))
    return 0
