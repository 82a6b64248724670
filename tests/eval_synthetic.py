"""Synthetic run directories with known answers for the eval tests (no training)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from stackcore.config import dump_toml

E, A, ALPHA = 1.5, 40.0, 0.15  # L(C) = E + A * C^-alpha


def power_law(c, k: float = 1.0, offset: float = 0.0):
    """The loss of a family that needs k times the FLOPs of the reference for the same loss."""
    return E + A * (np.asarray(c, dtype=float) / k) ** -ALPHA + offset


def write_run(root: Path, name: str, family: str, *, k: float = 1.0, n_ctx: int = 64, seed: int = 0,
              c_end: float = 1e12, c_start: float = 1e9, points: int = 60, offset: float = 0.0,
              flops_per_token: float = 1e6, tokens_per_s: float = 1000.0, fingerprint: str = "fp0",
              tokenizer: str = "tok0", val_tokens: int = 4096, mode: str = "packed", d_model: int = 64, lr: float = 5e-4) -> Path:
    run = root / name
    run.mkdir(parents=True)
    config = {"run": {"name": name, "seed": seed}, "model": {"family": family, "d_model": d_model,
              "n_layers": 2, "n_ctx": n_ctx, "heads": 1 if family == "mixer" else 4},
              "data": {"path": "", "val_tokens": val_tokens, "fingerprint": fingerprint, "tokenizer": tokenizer,
                       "mode": mode},
              "train": {"lr": lr}}
    (run / "config.toml").write_text(dump_toml(config))
    rows = []
    for i, c in enumerate(np.geomspace(c_start, c_end, points)):
        tokens = c / flops_per_token
        loss = float(power_law(c, k, offset))
        rows.append({"step": i + 1, "tokens": int(round(tokens)), "flops": float(c), "train_loss": loss + 0.05,
                     "val_loss": loss, "val_bpb": loss / np.log(2) / 4.0, "wall_s": tokens / tokens_per_s})
        rows.append({"step": i + 1, "tokens": int(round(tokens)), "flops": float(c), "train_loss": loss + 0.05})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run
