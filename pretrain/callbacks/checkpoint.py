"""Checkpoints every `checkpoint.every` steps, at the last step, on a stop signal, and at the end of a
run whose last step was not saved (e.g. resumed at its final step). Collective: every rank saves."""
from __future__ import annotations

from pretrain import checkpoint
from pretrain.callbacks.base import Callback, Loop
from stackcore import rundir


class Checkpointing(Callback):

    def __init__(self):
        self.saved_at = -1

    def on_start(self, loop: Loop) -> None:
        self.saved_at = loop.step if loop.resumed else -1

    def due(self, loop: Loop) -> bool:
        every = loop.cfg.checkpoint.every
        return loop.stop or loop.step == loop.total or bool(every and loop.step % every == 0)

    def save(self, loop: Loop) -> None:
        loop.state["micro_batches"], loop.state["world_size"] = loop.loader.consumed, loop.world.size
        path = checkpoint.save(loop.engine, loop.run_dir / rundir.CHECKPOINTS, loop.step, loop.state,
                               loop.loader.state_dict(), loop.world, loop.cfg.checkpoint.keep)
        self.saved_at = loop.step
        loop.saved.append((loop.step, path))

    def on_step(self, loop: Loop) -> None:
        loop.saved = []
        if self.due(loop):
            self.save(loop)

    def on_end(self, loop: Loop) -> None:
        if self.saved_at != loop.step:
            self.save(loop)
