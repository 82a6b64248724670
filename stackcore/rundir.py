"""The run directory layout, written by `pretrain` and read by `eval` and `slurm status`.

    runs/NAME/config.toml      fully resolved run config (+ git commit, package versions in its header)
    runs/NAME/metrics.jsonl    one JSON object per logged step (see METRIC_KEYS)
    runs/NAME/tb/              tensorboard events (same scalars; FLOPs and tokens as extra x-axes)
    runs/NAME/checkpoints/     DeepSpeed checkpoints (+ `latest` pointer), exports
    runs/NAME/slurm/           submitit logs and job ids when launched through Slurm
"""
from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

CONFIG = "config.toml"
METRICS = "metrics.jsonl"
TB = "tb"
CHECKPOINTS = "checkpoints"
SLURM = "slurm"
# Keys of a metrics.jsonl row (val_loss / val_bpb only on evaluation steps).
METRIC_KEYS = ("step", "tokens", "flops", "train_loss", "val_loss", "val_bpb", "lr", "grad_norm",
               "tokens_per_s", "mfu", "peak_mem_mb", "wall_s")


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
