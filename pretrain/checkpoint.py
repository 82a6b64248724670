"""Checkpoints: `checkpoints/stepNNNNNNNN/` = a DeepSpeed checkpoint (any ZeRO stage) + one loader-state
file per data stream + meta.json (train state, file sizes). Written under `.partial-stepN` and renamed by
rank 0 after every rank finished, so a half-written checkpoint is never picked up; the `latest` pointer
is rewritten atomically; only the last `keep` are kept.

Another world size: ZeRO 1-3 shard the optimizer state per rank, so a checkpoint saved by N ranks does
not load on M. Every save carries DeepSpeed's universal-checkpoint info; resuming at another world size
converts the checkpoint once with DeepSpeed's own tool (deepspeed.checkpoint.ds_to_universal) into
`stepN/ds-universal/` (built under a temporary name, renamed when complete) and loads that with
DeepSpeed's `load_universal`. With the same data.streams the resumed run sees the same global batches,
so its losses continue the uninterrupted run's (tests/test_elastic_resume.py)."""
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
UNIVERSAL_TAG = "ds-universal"
# what ds_to_universal requires in the model-states file (DeepSpeed's own key and current version)
UNIVERSAL_INFO = {"universal_checkpoint_info": {"universal_checkpoint_version": 0.4}}


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
    engine.save_checkpoint(str(partial), tag=DS_TAG, client_state=UNIVERSAL_INFO, save_latest=False)
    for stream, state in loader_states.items():
        save_stream_state(partial / f"loader-stream{stream:05d}.npz", state)
    np.save(partial / f"rng-rank{world.rank:05d}.npy", torch.get_rng_state().numpy())
    barrier()
    if world.is_main:
        sizes = {str(p.relative_to(partial)): p.stat().st_size for p in sorted(partial.rglob("*")) if p.is_file()}
        atomic_write_json(partial / META, {"step": step, "train_state": train_state, "world_size": world.size,
                                           "zero_stage": engine.zero_optimization_stage(), "files": sizes})
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
    Same world size (or ZeRO 0, nothing sharded): the checkpoint as saved. ZeRO 1-3 at another world
    size: its universal form (see the module docstring); data.streams must stay the same."""
    meta = verify(path)
    elastic = meta["world_size"] != world.size and meta.get("zero_stage", zero_stage) > 0
    tag = ensure_universal(path, world) if elastic else DS_TAG
    try:
        loaded = _load_engine(engine, path, tag, universal=elastic)
    except Exception as exc:  # torch.load / shape errors: name the checkpoint and the way out
        raise CheckpointError(f"{path}: cannot load the DeepSpeed checkpoint ({type(exc).__name__}: {exc}); "
                              f"delete {path} to resume from the previous one, or pass --checkpoint.resume none"
                              ) from exc
    if loaded is None:
        raise CheckpointError(f"{path}: DeepSpeed found no checkpoint under tag '{tag}'; the directory is corrupt")
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


def _load_engine(engine, path: Path, tag: str, universal: bool):
    # DeepSpeed reads `checkpoint.load_universal` from its config only while loading
    # (DeepSpeedEngine.load_universal_checkpoint()), and which checkpoint a run resumes from is known only
    # after its engine exists; so the flag is on for this one load, not in the config the engine got.
    config = engine._config
    before = config.load_universal_checkpoint
    per_group = _per_group_settings(engine.optimizer.param_groups)
    config.load_universal_checkpoint = universal
    try:
        loaded, _ = engine.load_checkpoint(str(path), tag=tag, load_module_strict=True,
                                           load_optimizer_states=True, load_lr_scheduler_states=True)
    finally:
        config.load_universal_checkpoint = before
    if universal:
        _repair_universal_optimizer(engine, per_group)
    return loaded


def _repair_universal_optimizer(engine, per_group: list[dict[str, Any]]) -> None:
    """Undo two slips of DeepSpeed's ZeRO-3 universal load (0.19.8), measured on the tiny test run one
    step after the resume: it gives every group the *same* `step` tensor, which AdamW increments in place
    once per group (wrong bias correction from then on; loss off by 5e-5), and it copies group 0's
    hyperparameters into every group (norms and biases, weight_decay 0, start decaying; 3e-6)."""
    for group, settings in zip(engine.optimizer.param_groups, per_group):
        group.update(settings)
    inner = getattr(engine.optimizer, "optimizer", engine.optimizer)  # the torch optimizer under ZeRO
    for state in inner.state.values():
        if torch.is_tensor(state.get("step")):
            state["step"] = state["step"].clone()


def _per_group_settings(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per optimizer group, the hyperparameters whose values differ between groups (weight_decay here)."""
    keys = [k for k in groups[0] if k != "params" and any(g.get(k) != groups[0][k] for g in groups)]
    return [{k: g[k] for k in keys if k in g} for g in groups]


def ensure_universal(path: Path, world) -> str:
    """The tag of the universal form of checkpoint `path`, converted by rank 0 if it is not there yet
    (once: later resumes reuse it). Every rank waits for the conversion; a failure is raised on all."""
    target = path / UNIVERSAL_TAG
    failure: Exception | None = None
    if world.is_main and not target.is_dir():
        try:
            convert_to_universal(path / DS_TAG, target)
        except Exception as exc:  # raised below, after the barrier: the other ranks must not hang in it
            failure = exc
    barrier()
    if failure is not None or not target.is_dir():
        cause = f"{type(failure).__name__}: {failure}" if failure else "on rank 0, see its error"
        raise CheckpointError(f"{path}: converting it to a universal checkpoint for a world of {world.size} "
                              f"failed ({cause}); resume "
                              f"with the saved world size ({json.loads((path / META).read_text())['world_size']} "
                              "ranks), or export the weights (python -m pretrain.export) and start a new run"
                              ) from failure
    return UNIVERSAL_TAG


def convert_to_universal(source: Path, target: Path) -> None:
    """DeepSpeed's own converter (ds_to_universal), into a temporary sibling renamed when complete, so a
    killed conversion is redone, never half-loaded."""
    import argparse
    import contextlib
    import io

    from deepspeed.checkpoint.ds_to_universal import main as ds_to_universal

    partial = target.with_name(f".{target.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)  # leftover of a killed conversion
    # one worker each: more would fork this process, which holds live process-group threads
    args = argparse.Namespace(input_folder=str(source), output_folder=str(partial), num_extract_workers=1,
                              num_merge_workers=1, keep_temp_folder=False, strict=True,
                              inject_missing_state=True)  # checkpoints saved before the universal info
    with contextlib.redirect_stdout(io.StringIO()):  # its progress lines, not the run's console
        ds_to_universal(args)
    partial.rename(target)
