"""What Slurm itself says about a job: slurmctld (scontrol) and accounting (sacct).

Both the job records (`slurm.jobs.active_job`), the requeue decision of a task (`slurm.train_task`) and
`slurm status` ask these; they sit below all three so that none of them imports another for it.
"""
from __future__ import annotations

import shutil
import subprocess

ACTIVE_STATES = ("PENDING", "RUNNING", "REQUEUED", "COMPLETING", "SUSPENDED", "CONFIGURING", "REQUEUE_HOLD")


def job_state(job_id: str) -> str:
    """JobState of a job (array element ids like 12_3 included) from slurmctld (scontrol), which knows a
    job the moment it is submitted (accounting may lag); "" when unknown or already purged."""
    try:
        out = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True,
                             timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
    for field in out.split():
        if field.startswith("JobState="):
            return field.split("=", 1)[1]
    return ""


def sacct_states(job_ids: list[str]) -> dict[str, str]:
    """{job id: Slurm state} through sacct; empty when Slurm is not reachable."""
    if not job_ids or not shutil.which("sacct"):
        return {}
    try:
        done = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(job_ids)],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return {}
    states = {}
    for line in done.stdout.splitlines():
        jid, _, state = line.partition("|")
        states[jid.strip()] = state.split()[0] if state.strip() else ""
    return states
