"""Ranks die with their launcher.

A SIGKILL of `torchrun` (or of whatever process started the ranks: the deepspeed launcher's per-node
launch.py, Slurm's step daemon) gives it no chance to stop them: they were orphans that kept training
and writing to the run directory, next to the `--checkpoint.resume auto` run started after them. So
every rank started by a launcher asks the kernel for SIGTERM when its parent dies (prctl PR_SET_PDEATHSIG); the trainer treats SIGTERM as a preemption
(every rank agrees on a step, saves, exits). A watchdog thread covers what the kernel signal does not:
a parent that died before the prctl (the rank then belongs to init), and a rank that does not finish
its preemption save within `grace_s` (a hung collective): it is SIGKILLed.
Linux only (prctl); elsewhere only the watchdog runs.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
POLL_S = 0.5
GRACE_S = 10.0  # SIGTERM -> SIGKILL: a tiny run saves in ~1 s, the bound keeps "no rank alive 15 s later"


def set_parent_death_signal(sig: int) -> bool:
    """Ask the kernel to send `sig` to this process when its parent (the thread that forked it) dies."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0


def die_with_parent() -> None:
    """For helper processes (DataLoader workers): SIGKILL when the parent dies, nothing to save."""
    set_parent_death_signal(signal.SIGKILL)


def _watch(parent: int, grace_s: float) -> None:
    while os.getppid() == parent:
        time.sleep(POLL_S)
    os.kill(os.getpid(), signal.SIGTERM)  # no-op twice: the kernel's SIGTERM may have come already
    time.sleep(grace_s)
    os.kill(os.getpid(), signal.SIGKILL)  # the preemption save did not finish: go anyway


_armed: list[int] = []
# A launcher can itself be pid 1 (`docker run IMAGE torchrun ...`); an init that adopted an orphan is not.
_LAUNCHER_WORDS = (b"torch", b"deepspeed", b"python", b"slurmstepd", b"srun", b"mpirun")


def _init_is_a_launcher() -> bool:
    try:
        cmdline = open("/proc/1/cmdline", "rb").read()
    except OSError:
        return True  # cannot tell: do not kill a healthy rank on a guess
    return any(word in cmdline for word in _LAUNCHER_WORDS)


def tie_to_launcher(grace_s: float = GRACE_S) -> None:
    """Call once in every rank a launcher started (idempotent). The parent is read before the prctl and
    compared after it, so a launcher that died in between is noticed too; a parent that is already an
    init (pid 1, not a launcher) means the launcher died before this process got here. (A subreaper
    that adopted the rank in that window is not recognised: the rank then lives on.)"""
    if _armed:
        return
    parent = os.getppid()
    set_parent_death_signal(signal.SIGTERM)
    _armed.append(parent)
    if parent == 1 and not _init_is_a_launcher():
        parent = -1  # the watchdog fires at once
    threading.Thread(target=_watch, args=(parent, grace_s), name="launcher-watchdog", daemon=True).start()
