"""The training entry point: `python -m pretrain.train --config FILE [--section.key value ...]`.

The same script runs as one bare process, under torchrun / the deepspeed launcher, and under Slurm (the
caller sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT). The loop: next micro-batches ->
objective loss -> backward/step -> callbacks (metrics, speed, validation, checkpoints, signals, status,
console; see pretrain/callbacks/). Exit codes: 0 done, 1 failed, 2 bad input (or the run directory is in
use by another live run), 3 preempted (a checkpoint was saved on a signal; Slurm requeues).
"""
from __future__ import annotations

import math
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch

from pretrain import checkpoint, distributed
from pretrain.callbacks import Callback, Loop, StepOutput, default_callbacks, device_info
from pretrain.config import RunConfig
from pretrain.data import check_manifest
from pretrain.engine import accumulation_steps, build_engine, current_lr, set_lr
from pretrain.guard import NonFiniteGuard, NonFiniteLossError
from pretrain.init import apply_init, init_options
from pretrain.objectives import build_objective
from pretrain.provenance import write_run_config
from pretrain.quiet import quiet_library_logs
from pretrain.schedule import total_steps
from stackcore import rundir
from stackcore.config import load_cli
from stackcore.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_PREEMPTED, UserError  # noqa: F401 (re-exported)


def run(cfg: RunConfig, clock: Callable[[], float] = time.perf_counter, sleep: Callable[[float], None] = time.sleep,
        extra_callbacks: list[Callback] = ()) -> dict[str, Any]:
    """Trains (or resumes) the run described by cfg; returns a summary (state, step, losses). `clock` and
    `sleep` measure and pace training steps (tests pass a fake clock); extra callbacks run after the
    standard ones."""
    quiet_library_logs()
    world = distributed.init(cfg.train.device)
    run_dir = Path(cfg.run.dir) / cfg.run.name
    progress = {"step": 0}  # filled in by the loop, so that a failure records where it happened
    lock = _lock_run_dir(run_dir, world)  # before anything writes into the run directory
    try:
        check_manifest(cfg.data.path, cfg.model, cfg.data)  # fail before any heavy setup
        build_objective(cfg)
        init_options(cfg)
        accumulation_steps(cfg.train, world.size)
        if world.is_main:
            (run_dir / rundir.ERROR).unlink(missing_ok=True)
        distributed.barrier()
        loop = _setup(cfg, world, run_dir, clock)
        callbacks = default_callbacks(cfg, world.is_main) + list(extra_callbacks)
        return _train(loop, callbacks, progress, sleep)
    except BaseException as exc:
        if world.is_main:
            (run_dir / rundir.ERROR).write_text(traceback.format_exc())
            rundir.write_status(run_dir, "failed", progress["step"], None, f"{type(exc).__name__}: {exc}")
        raise
    finally:
        if lock is not None:
            lock.release()
        distributed.shutdown()


def _lock_run_dir(run_dir: Path, world) -> rundir.RunLock | None:
    """The main rank locks the run directory; every rank learns whether it could (a refused run must not
    leave its other ranks waiting in a collective)."""
    lock, refused = None, None
    if world.is_main:
        try:
            lock = rundir.RunLock(run_dir).acquire()
        except rundir.RunLockedError as exc:
            refused = exc
    (n_refused,) = distributed.all_reduce_sum([float(refused is not None)], world.device)
    if n_refused:
        distributed.shutdown()
        raise refused or rundir.RunLockedError(f"{run_dir}: run directory in use by another run (see rank 0)")
    return lock


def _setup(cfg: RunConfig, world, run_dir: Path, clock: Callable[[], float]) -> Loop:
    """Model, engine, loader and train state (fresh, initialised from another run, or resumed)."""
    t = cfg.train
    objective = build_objective(cfg)
    torch.manual_seed(cfg.run.seed)  # identical initial weights on every rank
    model = objective.build_model()
    resume_from = checkpoint.resolve(run_dir / rundir.CHECKPOINTS, cfg.checkpoint.resume)
    # [init]: another run's weights (not when resuming: the checkpoint has them), frozen parts
    init = apply_init(model, cfg, resume_from is None, objective.init_targets(model))
    tokens_per_step = t.global_batch * objective.tokens_per_sample()
    flops_per_step = objective.flops_per_sample() * t.global_batch
    total = total_steps(t, tokens_per_step, flops_per_step)
    engine = build_engine(model, cfg, world.size, total)
    loader = objective.train_loader(world.rank, world.size)
    torch.manual_seed(cfg.run.seed * 1000 + world.rank + 1)  # dropout differs per rank
    state = {"step": 0, "tokens": 0, "flops": 0.0, "wall_s": 0.0, "skipped": 0, "micro_batches": 0}
    if resume_from is not None:
        state, streams = checkpoint.load(engine, resume_from, world, loader.local, cfg.deepspeed.zero_stage)
        loader.states.update(streams)
        # every rank consumed as many micro-batches; at another world size the same global position is
        # consumed * saved_world / world (an integer: global_batch is a multiple of micro_batch * world)
        loader.consumed = state["micro_batches"] * state.get("world_size", world.size) // world.size
    manifest = check_manifest(cfg.data.path, cfg.model, cfg.data)
    if world.is_main:
        write_run_config(cfg, run_dir)
    return Loop(cfg=cfg, world=world, run_dir=run_dir, engine=engine, objective=objective, loader=loader,
                manifest=manifest, total=total, tokens_per_step=tokens_per_step, flops_per_step=flops_per_step,
                state=state, clock=clock, resumed=resume_from is not None,
                device=device_info(world.device, world.size), init=init)


def _train(loop: Loop, callbacks: list[Callback], progress: dict[str, int], sleep) -> dict[str, Any]:
    """The loop: a step (timed: only steps count as training time), then the callbacks."""
    cfg = loop.cfg
    guard = NonFiniteGuard(loop.engine.module, cfg.train.max_nonfinite)
    progress["step"] = loop.step
    try:
        for cb in callbacks:
            cb.on_start(loop)
        while loop.step < loop.total and not loop.stop:
            started = loop.clock()
            loop.out = train_step(loop, guard, callbacks)
            if cfg.train.debug_step_sleep_s:
                sleep(cfg.train.debug_step_sleep_s)
            loop.state["wall_s"] += loop.clock() - started
            s = loop.state
            s["step"] += 1
            s["skipped"] += int(loop.out.skipped)
            s["tokens"] += loop.tokens_per_step
            s["flops"] += loop.flops_per_step
            progress["step"], loop.stop, loop.row = s["step"], loop.out.stop, None
            for cb in callbacks:
                cb.on_step(loop)
        for cb in callbacks:
            cb.on_end(loop)
    finally:
        for cb in callbacks:
            cb.close(loop)
    s = loop.state
    return {"state": loop.outcome, "step": s["step"], "tokens": s["tokens"], "flops": s["flops"],
            "skipped": s["skipped"], "train_loss": loop.out.train_loss if loop.out else None,
            "val_loss": loop.last_val.get("val_loss"), "run_dir": str(loop.run_dir)}


def train_step(loop: Loop, guard: NonFiniteGuard, callbacks: list[Callback]) -> StepOutput:
    """One optimizer step over `gas` micro-batches. One small all-reduce per micro-step makes every rank
    agree on non-finite losses (the step is then skipped: zero gradients, lr 0) and on stop signals."""
    engine, objective, world = loop.engine, loop.objective, loop.world
    gas = accumulation_steps(loop.cfg.train, world.size)
    lr = current_lr(engine)
    loss_sum, stop, bad, grad_norm = 0.0, False, False, None
    for micro in range(gas):
        loss, _ = objective.loss(engine, objective.batch(next(loop.loader), world.device))
        local_loss = float(loss.detach())
        signalled = loop.signals is not None and loop.signals.received is not None
        total_loss, n_bad, n_sig = distributed.all_reduce_sum(
            [local_loss if math.isfinite(local_loss) else 0.0, float(not math.isfinite(local_loss)),
             float(signalled)], world.device)
        guard.active = n_bad > 0
        bad, stop = bad or guard.active, stop or n_sig > 0
        loss_sum += total_loss
        engine.backward(loss)
        if micro == gas - 1:
            for cb in callbacks:
                cb.pre_optim_step(loop)
            grad_norm = None if bad else _grad_norm(engine, loop.cfg.deepspeed.zero_stage)
            if bad:
                set_lr(engine, 0.0)  # a skipped step: zero gradient, no parameter change
        engine.step()
    guard.active = False
    guard.record(bad, loop.step + 1)
    if grad_norm is None and not bad:
        grad_norm = engine.get_global_grad_norm()
    return StepOutput(train_loss=None if bad else loss_sum / (gas * world.size), lr=lr,
                      grad_norm=grad_norm, skipped=bad, stop=stop)


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
    try:
        summary = run(load_cli(RunConfig, argv))
    except (UserError, checkpoint.CheckpointError, NonFiniteLossError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_PREEMPTED if summary["state"] == "preempted" else 0


if __name__ == "__main__":
    sys.exit(main())
