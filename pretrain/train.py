"""The training entry point: `python -m pretrain.train --config FILE [--section.key value ...]`.

The same script runs as one bare process, under torchrun / the deepspeed launcher, and under Slurm (the
caller sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT). The loop: next micro-batches ->
forward/backward/step -> callbacks (metrics, validation, checkpoints, signals).
"""
from __future__ import annotations

import math
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from data_prep.format import FormatError
from pretrain import checkpoint, distributed
from pretrain.callbacks import (ERROR, MetricsLog, StopSignals, device_peak_flops, layer_stats,
                                peak_memory_mb, write_status)
from pretrain.config import RunConfig
from pretrain.data import TrainLoader, check_manifest
from pretrain.objectives import build_objective
from pretrain.engine import accumulation_steps, build_engine, current_lr, set_lr
from pretrain.guard import NonFiniteGuard, NonFiniteLossError
from pretrain.provenance import write_run_config
from pretrain.schedule import total_steps
from stackcore.config import ConfigError, load_config

EXIT_PREEMPTED = 3  # a checkpoint was saved on a signal; Slurm requeues on this code
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2  # bad config / data / checkpoint: requeueing will not help
STATUS_EVERY_S = 30.0


def run(cfg: RunConfig) -> dict[str, Any]:
    """Trains (or resumes) the run described by cfg; returns a summary (state, step, losses)."""
    world = distributed.init(cfg.train.device)
    run_dir = Path(cfg.run.dir) / cfg.run.name
    progress = {"step": 0}  # filled in by _train, so that a failure records where it happened
    try:
        check_manifest(cfg.data.path, cfg.model, cfg.data)  # fail before any heavy setup
        build_objective(cfg)
        accumulation_steps(cfg.train, world.size)
        if world.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / ERROR).unlink(missing_ok=True)
        distributed.barrier()
        return _train(cfg, world, run_dir, progress)
    except BaseException as exc:
        if world.is_main and run_dir.is_dir():
            (run_dir / ERROR).write_text(traceback.format_exc())
            write_status(run_dir, "failed", progress["step"], None, f"{type(exc).__name__}: {exc}")
        raise
    finally:
        distributed.shutdown()


def _train(cfg: RunConfig, world, run_dir: Path, progress: dict[str, int]) -> dict[str, Any]:
    t = cfg.train
    objective = build_objective(cfg)
    torch.manual_seed(cfg.run.seed)  # identical initial weights on every rank
    model = objective.build_model()
    tokens_per_step = t.global_batch * objective.tokens_per_sample()
    flops_per_token = objective.flops_per_sample() / objective.tokens_per_sample()
    total = total_steps(t, tokens_per_step, flops_per_token * tokens_per_step)
    engine = build_engine(model, cfg, world.size, total)
    guard = NonFiniteGuard(engine.module, t.max_nonfinite)
    gas = accumulation_steps(t, world.size)
    loader = TrainLoader(cfg, world.rank, world.size)
    torch.manual_seed(cfg.run.seed * 1000 + world.rank + 1)  # dropout differs per rank

    ck_root = run_dir / "checkpoints"
    state = {"step": 0, "tokens": 0, "flops": 0.0, "wall_s": 0.0, "skipped": 0, "micro_batches": 0}
    resume_from = checkpoint.resolve(ck_root, cfg.checkpoint.resume)
    if resume_from is not None:
        state, streams = checkpoint.load(engine, resume_from, world, loader.local, cfg.deepspeed.zero_stage)
        loader.states.update(streams)
        # every rank consumed as many micro-batches; at another world size the same global position is
        # consumed * saved_world / world (an integer: global_batch is a multiple of micro_batch * world)
        loader.consumed = state["micro_batches"] * state.get("world_size", world.size) // world.size
        progress["step"] = state["step"]
    manifest = check_manifest(cfg.data.path, cfg.model, cfg.data)
    val = objective.validation_set(manifest)
    val_identity = {"data_fingerprint": manifest.get("fingerprint"), "ranks_sha256": manifest["ranks_sha256"]}
    peak = cfg.log.peak_flops or device_peak_flops(world.device, t.precision)
    metrics = MetricsLog(run_dir, state["step"]) if world.is_main else None
    if world.is_main:
        write_run_config(cfg, run_dir)
        write_status(run_dir, "running", state["step"], None)
    signals = StopSignals()
    last = {"train_loss": None, "val_loss": None, "state": "completed"}
    saved_at = state["step"] if resume_from is not None else -1
    tick, tick_tokens, status_at = time.time(), 0, time.time()
    try:
        while state["step"] < total:
            lr = current_lr(engine)
            loss_sum, stop, bad, stats = 0.0, False, False, None
            for micro in range(gas):
                loss, _ = objective.loss(engine, objective.batch(next(loader), world.device))
                local_loss = float(loss.detach())
                # one small all-reduce per micro-step: every rank agrees on non-finite losses and signals
                total_loss, n_bad, n_sig = distributed.all_reduce_sum(
                    [local_loss if math.isfinite(local_loss) else 0.0, float(not math.isfinite(local_loss)),
                     float(signals.received is not None)], world.device)
                guard.active = n_bad > 0
                bad, stop = bad or guard.active, stop or n_sig > 0
                loss_sum += total_loss
                engine.backward(loss)
                if micro == gas - 1:
                    if cfg.log.stats_every and (state["step"] + 1) % cfg.log.stats_every == 0:
                        stats = layer_stats(engine)
                    grad_norm = None if bad else _grad_norm(engine, cfg.deepspeed.zero_stage)
                    if bad:
                        set_lr(engine, 0.0)  # a skipped step: zero gradient, no parameter change
                engine.step()
            guard.active = False
            guard.record(bad, state["step"] + 1)
            if grad_norm is None and not bad:
                grad_norm = engine.get_global_grad_norm()
            state["step"] += 1
            state["skipped"] += int(bad)
            state["tokens"] += tokens_per_step
            state["flops"] += flops_per_token * tokens_per_step
            tick_tokens += tokens_per_step
            step = progress["step"] = state["step"]
            last["train_loss"] = loss_sum / (gas * world.size) if not bad else None
            if t.debug_step_sleep_s:
                time.sleep(t.debug_step_sleep_s)
            row = None
            if step % cfg.log.every == 0 or step == total or stop:
                now = time.time()
                state["wall_s"] += now - tick
                tps = tick_tokens / max(now - tick, 1e-9)
                row = {"step": step, "tokens": state["tokens"], "flops": state["flops"],
                       "train_loss": last["train_loss"], "lr": lr,
                       "grad_norm": float(grad_norm) if grad_norm is not None else None,
                       "tokens_per_s": tps, "mfu": flops_per_token * tps / (peak * world.size) if peak else None,
                       "peak_mem_mb": peak_memory_mb(world.device), "wall_s": state["wall_s"],
                       "skipped_steps": state["skipped"]}
                tick, tick_tokens = now, 0
            is_eval = val is not None and ((cfg.log.eval_every and step % cfg.log.eval_every == 0) or step == total)
            if is_eval:
                found = objective.evaluate(engine, val, world, t.micro_batch, cfg.log.eval_tokens)
                last["val_loss"] = found.get("val_loss")
                row = row or {"step": step, "tokens": state["tokens"], "flops": state["flops"]}
                row.update(found, val_set=val_identity)  # eval compares only runs validated on the same set
                tick = time.time()  # validation time does not count as training throughput
            if row is not None and stats:
                row["layer_stats"] = stats
            if row is not None and metrics:
                metrics.log(row)
                if time.time() - status_at > STATUS_EVERY_S:  # an fsync'ed write: not every step
                    write_status(run_dir, "running", step, last["train_loss"])
                    status_at = time.time()
            if stop or step == total or (cfg.checkpoint.every and step % cfg.checkpoint.every == 0):
                state["micro_batches"], state["world_size"] = loader.consumed, world.size
                checkpoint.save(engine, ck_root, step, state, loader.state_dict(), world, cfg.checkpoint.keep)
                saved_at = step
                tick = time.time()
            if stop:
                last["state"] = "preempted"
                break
        if saved_at != state["step"]:  # e.g. resumed at the final step
            state["micro_batches"], state["world_size"] = loader.consumed, world.size
            checkpoint.save(engine, ck_root, state["step"], state, loader.state_dict(), world, cfg.checkpoint.keep)
    finally:
        signals.restore()
        if metrics:
            metrics.close()
    if world.is_main:
        write_status(run_dir, last["state"], state["step"], last["train_loss"])
    return {**last, "step": state["step"], "tokens": state["tokens"], "flops": state["flops"],
            "skipped": state["skipped"], "run_dir": str(run_dir)}


def _grad_norm(engine, zero_stage: int) -> float | None:
    """Pre-clipping global gradient norm; ZeRO stages report it themselves after the step, stage 0 does not."""
    if zero_stage != 0:
        return None
    norms = [p.grad.detach().float().norm() for p in engine.module.parameters() if p.grad is not None]
    return float(torch.stack(norms).norm()) if norms else 0.0  # one host sync, not one per tensor


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # the `deepspeed` launcher appends --local_rank=N; LOCAL_RANK in the environment says the same
    argv = [a for a in argv if not a.startswith(("--local_rank=", "--local-rank="))]
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__)
        return 0
    config = None
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            print("error: --config needs a file", file=sys.stderr)
            return EXIT_BAD_INPUT
        config = argv[i + 1]
        argv = argv[:i] + argv[i + 2:]
    try:
        cfg = load_config(RunConfig, config, argv)
        summary = run(cfg)
    except (ConfigError, FormatError, checkpoint.CheckpointError, NonFiniteLossError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_PREEMPTED if summary["state"] == "preempted" else 0


if __name__ == "__main__":
    sys.exit(main())
