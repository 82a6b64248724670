"""Throughput: tokens/s and MFU over the training time since the previous log row, peak memory.
MFU uses the executed FLOP count of the model's implementation (rows say so: `mfu_flops`).

Training time is `loop.state["wall_s"]`, which the loop accumulates around each step only, so validation
and checkpoint saves neither lower tokens/s nor count as training time on the `wall_s` axis."""
from __future__ import annotations

from pretrain.callbacks.base import Callback, Loop
from pretrain.callbacks.hardware import device_peak_flops, peak_memory_mb


class Speed(Callback):

    def __init__(self):
        self.peak = 0.0
        self.since_tokens = 0
        self.since_wall = 0.0

    def on_start(self, loop: Loop) -> None:
        self.peak = loop.cfg.log.peak_flops or device_peak_flops(loop.world.device, loop.cfg.train.precision)
        self.since_tokens, self.since_wall = loop.state["tokens"], loop.state["wall_s"]

    def on_step(self, loop: Loop) -> None:
        if not loop.is_log_step():
            return
        tokens, wall = loop.state["tokens"] - self.since_tokens, loop.state["wall_s"] - self.since_wall
        self.since_tokens, self.since_wall = loop.state["tokens"], loop.state["wall_s"]
        tps = tokens / max(wall, 1e-9)
        flops_per_token = loop.flops_per_step / loop.tokens_per_step
        mfu = flops_per_token * tps / (self.peak * loop.world.size) if self.peak else None
        row = loop.ensure_row()
        row.update(tokens_per_s=tps, mfu=mfu, peak_mem_mb=peak_memory_mb(loop.world.device))
        if mfu is not None:
            # which FLOP count MFU divides: what the model's impl executes (a blocked or FFT mixer skips the
            # masked half; attention is charged dense), see pretrain/models/flops.py
            row["mfu_flops"] = "executed"
