"""config.toml of a run: the fully resolved config with the git commit and package versions on top."""
from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

from stackcore.atomic import atomic_write_bytes
from stackcore import rundir
from stackcore.config import dump_toml

PACKAGES = ("mixerstack", "torch", "deepspeed", "numpy", "webdataset", "tensorboard")


def git_commit() -> str:
    repo = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10)
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def write_run_config(cfg, run_dir: Path) -> None:
    header = [f"git_commit: {git_commit()}"] + [f"{k}: {v}" for k, v in versions().items()]
    atomic_write_bytes(run_dir / rundir.CONFIG, dump_toml(cfg, header="\n".join(header)).encode())
