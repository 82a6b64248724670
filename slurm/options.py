"""The `[slurm]` section as both launchers read it: `slurm train` and `slurm prep` take the same launcher
flags, with the same types, and resolve them onto the same `SlurmSection` defaults here.

    slurm train: SlurmSection defaults < the run config's [slurm] < launcher flags (written into the run's
                 config as --slurm.key overrides, so its config.toml records how it was launched)
    slurm prep:  SlurmSection defaults < PREP_DEFAULTS < launcher flags
"""
from __future__ import annotations

import argparse
from typing import Any

from pretrain.config import SlurmSection
from stackcore.config import from_dict, merge, parse_overrides

# flag (--gpus-per-node) -> key of the [slurm] section (gpus_per_node) and its type
LAUNCHER_FLAGS: dict[str, type] = {
    "nodes": int, "gpus_per_node": int, "tasks_per_node": int, "partition": str, "account": str, "qos": str,
    "time": str, "constraint": str, "mem": str, "cpus_per_task": int, "signal_lead_s": int, "max_requeues": int}
# A prep array element is one CPU task; its tasks are idempotent and resumable, so a preempted element is
# simply resubmitted (no requeue loop) and needs only a short signal lead.
PREP_FLAGS = ("partition", "account", "qos", "time", "constraint", "mem", "cpus_per_task")
PREP_DEFAULTS: dict[str, Any] = {"nodes": 1, "gpus_per_node": 0, "tasks_per_node": 1, "signal_lead_s": 30,
                                 "max_requeues": 0}


def add_launcher_flags(parser: argparse.ArgumentParser, keys=tuple(LAUNCHER_FLAGS)) -> None:
    """--key-with-dashes for each [slurm] key; unset flags stay None (the section's value applies)."""
    for key in keys:
        parser.add_argument("--" + key.replace("_", "-"), dest=key, type=LAUNCHER_FLAGS[key], default=None,
                            help=f"slurm.{key}")


def flag_overrides(args: argparse.Namespace, keys=tuple(LAUNCHER_FLAGS)) -> list[str]:
    """The flags that were given, as `--slurm.key value` config overrides (strings quoted for TOML)."""
    out: list[str] = []
    for key in keys:
        value = getattr(args, key, None)
        if value is not None:
            out += [f"--slurm.{key}", f'"{value}"' if isinstance(value, str) else str(value)]
    return out


def prep_section(args: argparse.Namespace) -> SlurmSection:
    """The [slurm] section of a prep array: PREP_DEFAULTS, then the launcher flags given."""
    flags = parse_overrides(flag_overrides(args, PREP_FLAGS)).get("slurm", {})
    return from_dict(SlurmSection, merge(PREP_DEFAULTS, flags))
