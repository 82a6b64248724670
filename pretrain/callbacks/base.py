"""The loop's shared state and the callback protocol (modelled on OLMo-core's trainer callbacks).

The loop (pretrain/train.py) only runs steps; everything around a step -- metrics rows, speed, validation,
checkpoints, signals, status.json, the console -- is a `Callback` that decides itself when to act (its
cadence) from the `Loop` it is handed. Callbacks run in list order; a metrics row of a step is built by
the ones before `Metrics` (`loop.ensure_row()`), written by `Metrics`, printed by `Console`."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


@dataclass
class StepOutput:
    """What one optimizer step reports (the same on every rank: losses and flags are all-reduced)."""
    train_loss: float | None  # mean over the global batch; None for a skipped (non-finite) step
    lr: float
    grad_norm: float | None
    skipped: bool
    stop: bool  # a stop signal reached some rank during this step: save and exit preempted


@dataclass
class Loop:
    """The run as callbacks see it. `state` is what a checkpoint stores (step, tokens, flops, wall_s,
    skipped, micro_batches); `wall_s` is the summed time of training steps only (validation, checkpoint
    saves and logging excluded), measured with `clock`."""
    cfg: Any
    world: Any
    run_dir: Path
    engine: Any
    objective: Any
    loader: Any
    manifest: dict[str, Any]
    total: int
    tokens_per_step: int
    flops_per_step: float
    state: dict[str, Any]
    clock: Callable[[], float]
    resumed: bool = False
    device: dict[str, Any] = field(default_factory=dict)  # {"name", "count"}: the hardware of every row
    init: dict[str, Any] = field(default_factory=dict)  # {"source", "frozen"} from pretrain.init.apply_init
    signals: Any = None  # a StopSignals once the Signals callback started
    out: StepOutput | None = None  # the step just taken
    row: dict[str, Any] | None = None  # this step's metrics row, if any callback made one
    layer_stats: dict[str, float] | None = None  # per-block norms of this step (LayerStats)
    stop: bool = False
    outcome: str = "completed"  # or "preempted"
    last_val: dict[str, Any] = field(default_factory=dict)
    best_val: tuple[float, int] | None = None  # (val_loss, step)
    saved: list[tuple[int, Path]] = field(default_factory=list)  # checkpoints written this step

    @property
    def step(self) -> int:
        return int(self.state["step"])

    def ensure_row(self) -> dict[str, Any]:
        """This step's metrics row; every row carries the axes (step, tokens, flops, wall_s) and the device."""
        if self.row is None:
            self.row = {"step": self.step, "tokens": self.state["tokens"], "flops": self.state["flops"],
                        "wall_s": self.state["wall_s"], "device": self.device}
        return self.row

    def is_log_step(self) -> bool:
        every = self.cfg.log.every
        return (every and self.step % every == 0) or self.step == self.total or self.stop


class Callback:
    """Hooks, all optional. `close` runs even when the run fails (release files, handlers)."""

    main_rank_only = False  # True: built on the main rank only (files, console)

    def on_start(self, loop: Loop) -> None: ...

    def pre_optim_step(self, loop: Loop) -> None:
        """Between the last backward and the optimizer step: gradients are there."""

    def on_step(self, loop: Loop) -> None: ...

    def on_end(self, loop: Loop) -> None:
        """After the last step of a run that did not fail (completed or preempted)."""

    def close(self, loop: Loop) -> None: ...
