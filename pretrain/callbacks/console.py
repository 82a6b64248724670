"""What a person running `python -m pretrain.train` sees (main rank; `--log.quiet true` silences it): a
header, one line per log step, one per checkpoint, and a final summary with the tensorboard command."""
from __future__ import annotations

import sys
from typing import TextIO

from pretrain.callbacks.base import Callback, Loop
from stackcore import rundir


def duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def rate(tokens_per_s: float) -> str:
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if tokens_per_s >= scale:
            return f"{tokens_per_s / scale:.1f}{unit}"
    return f"{tokens_per_s:.0f}"


class Console(Callback):

    main_rank_only = True

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream
        self.started = 0.0
        self.first_step = 0

    def print(self, text: str) -> None:
        print(text, file=self.stream or sys.stdout, flush=True)

    def on_start(self, loop: Loop) -> None:
        self.started, self.first_step = loop.clock(), loop.step
        cfg, model = loop.cfg, loop.cfg.model
        params = sum(p.numel() for p in {id(p): p for p in loop.engine.module.parameters()}.values())
        start = f"resuming at step {loop.step}" if loop.resumed else "starting"
        self.print(f"{loop.run_dir}: {start}; {model.family} d{model.d_model}x{model.n_layers} "
                   f"({params / 1e6:.2f}M params), objective {loop.objective.name}, {loop.total} steps of "
                   f"{loop.tokens_per_step} tokens on {loop.device['count']}x {loop.device['name']}, "
                   f"ZeRO-{cfg.deepspeed.zero_stage}, {cfg.train.precision}")
        if loop.init.get("source") or loop.init.get("frozen"):
            self.print(f"init: weights from {loop.init.get('source') or 'the resumed checkpoint'}; "
                       f"{len(loop.init.get('frozen', []))} parameter tensors frozen")

    def on_step(self, loop: Loop) -> None:
        row = loop.row or {}
        if "train_loss" in row or "val_loss" in row:
            self.print(self.step_line(loop, row))
        for step, path in loop.saved:
            self.print(f"checkpoint step {step} -> {path}")

    def step_line(self, loop: Loop, row: dict) -> str:
        width = len(str(loop.total))
        parts = [f"step {loop.step:>{width}}/{loop.total}"]
        if row.get("train_loss") is not None:
            parts.append(f"loss {row['train_loss']:.4f}")
        elif "train_loss" in row:
            parts.append("loss skipped (non-finite)")
        if row.get("val_loss") is not None:
            parts.append(f"val {row['val_loss']:.4f}")
        if row.get("tokens_per_s") is not None:
            parts.append(f"{rate(row['tokens_per_s'])} tok/s")
        if row.get("mfu") is not None:
            parts.append(f"MFU {100 * row['mfu']:.1f}%")
        elapsed = loop.clock() - self.started
        done = loop.step - self.first_step
        eta = elapsed / done * (loop.total - loop.step) if done else 0.0
        parts.append(f"{duration(elapsed)} elapsed, ETA {duration(eta)}")
        return " | ".join(parts)

    def on_end(self, loop: Loop) -> None:
        best = (f"best val loss {loop.best_val[0]:.4f} at step {loop.best_val[1]}" if loop.best_val
                else "no validation")
        self.print(f"{loop.outcome}: {loop.step}/{loop.total} steps, {best}, {duration(loop.clock() - self.started)}"
                   f"; run dir {loop.run_dir}")
        if loop.outcome == "preempted":
            self.print(f"resume: run the same command again (checkpoint.resume = auto)")
        self.print(f"curves: tensorboard --logdir {loop.run_dir / rundir.TB}")
