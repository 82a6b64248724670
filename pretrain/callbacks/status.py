"""status.json (main rank): `running` at the start and at most every STATUS_EVERY_S on a logged step (an
fsync'ed write: not every step), then `completed` or `preempted`. A failure is recorded by
pretrain.train.run, which also writes error.txt."""
from __future__ import annotations

from pretrain.callbacks.base import Callback, Loop
from stackcore import rundir

STATUS_EVERY_S = 30.0


class Status(Callback):

    main_rank_only = True

    def __init__(self):
        self.written_at = 0.0
        self.last_loss: float | None = None

    def write(self, loop: Loop, state: str) -> None:
        rundir.write_status(loop.run_dir, state, loop.step, self.last_loss)
        self.written_at = loop.clock()

    def on_start(self, loop: Loop) -> None:
        self.write(loop, "running")

    def on_step(self, loop: Loop) -> None:
        self.last_loss = loop.out.train_loss
        if loop.row is not None and loop.clock() - self.written_at > STATUS_EVERY_S:
            self.write(loop, "running")

    def on_end(self, loop: Loop) -> None:
        self.write(loop, loop.outcome)
