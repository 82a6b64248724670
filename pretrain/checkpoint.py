"""Checkpoints: `checkpoints/stepNNNNNNNN/` = a DeepSpeed checkpoint (any ZeRO stage) + one loader-state
file per data stream + meta.json (train state, file sizes). Written under `.partial-stepN` and renamed by
rank 0 after every rank finished, so a half-written checkpoint is never picked up; the `latest` pointer
is rewritten atomically; only the last `keep` are kept."""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data_prep.format import atomic_write_bytes, atomic_write_json
from pretrain.data import load_stream_state, save_stream_state
from pretrain.distributed import barrier
from stackcore.errors import UserError

STEP_DIR = re.compile(r"^step(\d{8})$")
LATEST = "latest"
META = "meta.json"
DS_TAG = "ds"


class CheckpointError(UserError, RuntimeError):
    """An unusable checkpoint; the message names it and the fix."""


def step_dir(root: Path, step: int) -> Path:
    return root / f"step{step:08d}"


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints, oldest first (partial ones never match the name pattern)."""
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and STEP_DIR.match(p.name)), key=lambda p: p.name)


def save(engine, root: Path, step: int, train_state: dict[str, Any], loader_states: dict[int, dict],
         world, keep: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    final = step_dir(root, step)
    partial = root / f".partial-step{step:08d}"
    if world.is_main and partial.exists():
        shutil.rmtree(partial)  # leftover of a killed save
    barrier()
    engine.save_checkpoint(str(partial), tag=DS_TAG, save_latest=False)
    for stream, state in loader_states.items():
        save_stream_state(partial / f"loader-stream{stream:05d}.npz", state)
    np.save(partial / f"rng-rank{world.rank:05d}.npy", torch.get_rng_state().numpy())
    barrier()
    if world.is_main:
        sizes = {str(p.relative_to(partial)): p.stat().st_size for p in sorted(partial.rglob("*")) if p.is_file()}
        atomic_write_json(partial / META, {"step": step, "train_state": train_state, "world_size": world.size,
                                           "files": sizes})
        if final.exists():
            shutil.rmtree(final)
        partial.rename(final)
        atomic_write_bytes(root / LATEST, f"{final.name}\n".encode())
        for old in list_checkpoints(root)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    barrier()
    return final


def resolve(root: Path, resume: str) -> Path | None:
    """The checkpoint to resume from: 'none' -> None, 'auto' -> latest complete one (if any), or a path."""
    if resume == "none":
        return None
    if resume != "auto":
        path = Path(resume)
        if not (path / META).is_file():
            raise CheckpointError(f"{path}: not a checkpoint directory (no {META}); pass a checkpoints/stepN "
                                  "directory, 'auto' or 'none'")
        return path
    found = list_checkpoints(root)
    return found[-1] if found else None


def verify(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads((path / META).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: unreadable {META} ({exc}); the checkpoint is corrupt: delete {path} to "
                              "resume from the previous one, or pass --checkpoint.resume none") from None
    for name, size in meta["files"].items():
        f = path / name
        if not f.is_file() or f.stat().st_size != size:
            raise CheckpointError(f"{f}: missing or truncated (expected {size} bytes); the checkpoint is corrupt: "
                                  f"delete {path} to resume from the previous one, or pass --checkpoint.resume none")
    return meta


def load(engine, path: Path, world, local_streams: list[int], zero_stage: int) -> tuple[dict[str, Any], dict[int, dict]]:
    """Restores engine (model, optimizer, scheduler), this rank's RNG and its streams' loader states.
    ZeRO 0 checkpoints resume at any world size (with the same data.streams); ZeRO 1-3 shard the optimizer
    per rank, so they need the world size they were saved with."""
    meta = verify(path)
    if meta["world_size"] != world.size and zero_stage > 0:
        raise CheckpointError(f"{path}: saved by {meta['world_size']} ranks at ZeRO-{zero_stage}, resumed with "
                              f"{world.size}; resume with {meta['world_size']} ranks, or export the weights "
                              "(python -m pretrain.export) and start a new run")
    try:
        loaded, _ = engine.load_checkpoint(str(path), tag=DS_TAG, load_module_strict=True,
                                           load_optimizer_states=True, load_lr_scheduler_states=True)
    except Exception as exc:  # torch.load / shape errors: name the checkpoint and the way out
        raise CheckpointError(f"{path}: cannot load the DeepSpeed checkpoint ({type(exc).__name__}: {exc}); "
                              f"delete {path} to resume from the previous one, or pass --checkpoint.resume none"
                              ) from exc
    if loaded is None:
        raise CheckpointError(f"{path}: DeepSpeed found no checkpoint under tag '{DS_TAG}'; the directory is corrupt")
    rng = path / f"rng-rank{world.rank:05d}.npy"
    if rng.is_file():
        torch.set_rng_state(torch.from_numpy(np.load(rng, allow_pickle=False)))
    states = {}
    for s in local_streams:
        f = path / f"loader-stream{s:05d}.npz"
        if not f.is_file():
            raise CheckpointError(f"{f}: no loader state for stream {s}; resume with the same data.streams "
                                  f"as the saved run (it had world size {meta['world_size']})")
        states[s] = load_stream_state(f)
    return {**meta["train_state"], "world_size": meta["world_size"]}, states
