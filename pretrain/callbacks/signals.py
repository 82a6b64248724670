"""Stop signals: SIGTERM / SIGUSR1 / SIGUSR2 only set a flag; the loop all-reduces it with the loss of
every micro-step, so every rank agrees on the step at which to save (a handler never does collective
work itself). The run then saves (Checkpointing) and ends `preempted` (exit code 3: Slurm requeues)."""
from __future__ import annotations

import signal

from pretrain.callbacks.base import Callback, Loop


class StopSignals:
    SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)

    def __init__(self):
        self.received: int | None = None
        self._old = {s: signal.signal(s, self._handle) for s in self.SIGNALS}

    def _handle(self, signum, _frame) -> None:
        self.received = signum

    def restore(self) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)


class Signals(Callback):

    def on_start(self, loop: Loop) -> None:
        loop.signals = StopSignals()

    def on_step(self, loop: Loop) -> None:
        if loop.stop:
            loop.outcome = "preempted"

    def close(self, loop: Loop) -> None:
        if loop.signals is not None:
            loop.signals.restore()
            loop.signals = None
