"""Turning a `[slurm]` config section into a submitit SlurmExecutor (and its sbatch script for --dry-run).

One task per GPU, or `tasks_per_node` CPU ranks per node when `gpus_per_node = 0`. The preemption
signal (SIGUSR1, `signal_lead_s` ahead of the time limit) goes to every task, so every rank of the
trainer sees it and they agree on one collective checkpoint. Jobs run with the launcher's own
interpreter (the project's venv), because submitit pickles the job function by reference: the job
must import the installed project.
"""
from __future__ import annotations

import math
import re
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

import submitit

from pretrain.config import SlurmSection
from stackcore.config import ConfigError

# The signal the trainer turns into a collective checkpoint + EXIT_PREEMPTED (it handles SIGUSR2 and
# SIGTERM too; SIGUSR1 keeps submitit's own SIGUSR2 handler out of the way).
PREEMPT_SIGNAL = "USR1"

_TIME = re.compile(r"^(?:(?P<d>\d+)-)?(?P<a>\d+)(?::(?P<b>\d+))?(?::(?P<c>\d+))?$")


def time_minutes(text: str) -> int:
    """Slurm's --time formats (M, M:S, H:M:S, D-H, D-H:M, D-H:M:S) -> whole minutes, rounded up
    (Slurm keeps job time limits in minutes)."""
    m = _TIME.match(text.strip())
    if not m:
        raise ConfigError(f"slurm.time: {text!r} is not a Slurm time (e.g. 01:30:00, 90, 2-00:00:00)")
    d, a, b, c = (int(x) if x is not None else None for x in m.group("d", "a", "b", "c"))
    if d is not None:  # D-H[:M[:S]]
        seconds = d * 86400 + a * 3600 + (b or 0) * 60 + (c or 0)
    elif c is not None:  # H:M:S
        seconds = a * 3600 + b * 60 + c
    elif b is not None:  # M:S
        seconds = a * 60 + b
    else:  # M
        seconds = a * 60
    if seconds <= 0:
        raise ConfigError(f"slurm.time: {text!r} must be positive")
    return math.ceil(seconds / 60)


def ranks_per_node(section: SlurmSection) -> int:
    return section.gpus_per_node if section.gpus_per_node > 0 else max(1, section.tasks_per_node)


def check(section: SlurmSection) -> None:
    """Errors a user can fix before anything reaches the queue."""
    minutes = time_minutes(section.time)
    if section.signal_lead_s >= minutes * 60:
        raise ConfigError(f"slurm.signal_lead_s={section.signal_lead_s} must be shorter than slurm.time="
                          f"{section.time!r} ({minutes * 60} s), else the job checkpoints as soon as it starts")
    if section.signal_lead_s < 1:
        raise ConfigError("slurm.signal_lead_s must be >= 1 and exceed the time one checkpoint takes")
    for key in ("nodes", "cpus_per_task"):
        if getattr(section, key) < 1:
            raise ConfigError(f"slurm.{key} must be >= 1, got {getattr(section, key)}")


def make_executor(section: SlurmSection, folder: str | Path, job_name: str,
                  array_parallelism: int | None = None) -> submitit.SlurmExecutor:
    check(section)
    if shutil.which("srun") is None:
        raise ConfigError("Slurm's srun/sbatch are not on PATH: run this on a Slurm login node (or start the "
                          "local test cluster: sudo bash slurm/local/start.sh)")
    Path(folder).mkdir(parents=True, exist_ok=True)
    executor = submitit.SlurmExecutor(folder=str(folder), python=shlex.quote(sys.executable),
                                      max_num_timeout=section.max_requeues)
    extra: dict[str, Any] = {"signal": f"{PREEMPT_SIGNAL}@{section.signal_lead_s}", "requeue": True}
    if section.mem:
        extra["mem"] = section.mem  # submitit's own `mem` wants GB as a float; pass Slurm's syntax through
    # A flag given as "" or "true" is a bare switch (#SBATCH --exclusive).
    extra.update({k: (True if str(v).lower() in ("", "true") else v) for k, v in section.sbatch.items()})
    params: dict[str, Any] = dict(
        job_name=job_name, time=time_minutes(section.time), nodes=section.nodes,
        ntasks_per_node=ranks_per_node(section), cpus_per_task=section.cpus_per_task,
        signal_delay_s=section.signal_lead_s, additional_parameters=extra,
        # One rank dying (exception, OOM) ends the step at once instead of leaving the others blocked
        # in a collective until the process-group timeout.
        srun_args=["--kill-on-bad-exit=1"],
        # The trainer's log lines of every rank go to one file per task; the exit status of the job
        # step is what Slurm's accounting reports.
        setup=[*section.setup, "export PYTHONUNBUFFERED=1",
               f"export OMP_NUM_THREADS=${{OMP_NUM_THREADS:-{section.cpus_per_task}}}"],
    )
    if section.gpus_per_node > 0:
        params["gpus_per_node"] = section.gpus_per_node
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(section, key):
            params[key] = getattr(section, key)
    if array_parallelism is not None:
        params["array_parallelism"] = array_parallelism
    executor.update_parameters(**params)
    return executor


def sbatch_script(executor: submitit.SlurmExecutor, array_size: int | None = None) -> str:
    """The sbatch script `executor.submit` would queue (the submitit command included)."""
    from submitit.slurm.slurm import _make_sbatch_string  # the generator submit() itself uses

    params = dict(executor.parameters)
    if array_size is not None:
        params["map_count"] = array_size
    return _make_sbatch_string(command=executor._submitit_command_str, folder=executor.folder, **params)
