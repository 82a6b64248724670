"""Validation on the fixed set every `log.eval_every` steps and at the last step, through the objective's
one evaluation function (the one `python -m eval loss` uses). Collective: runs on every rank."""
from __future__ import annotations

from pretrain.callbacks.base import Callback, Loop


class Validation(Callback):

    def __init__(self):
        self.val = None
        self.identity: dict[str, object] = {}

    def on_start(self, loop: Loop) -> None:
        self.val = loop.objective.validation_set(loop.manifest)
        # eval compare puts only runs validated on the same set on one axis
        self.identity = {"data_fingerprint": loop.manifest.get("fingerprint"),
                         "ranks_sha256": loop.manifest["ranks_sha256"]}

    def due(self, loop: Loop) -> bool:
        every = loop.cfg.log.eval_every
        return self.val is not None and ((every and loop.step % every == 0) or loop.step == loop.total)

    def on_step(self, loop: Loop) -> None:
        if not self.due(loop):
            return
        found = loop.objective.evaluate(loop.engine, self.val, loop.world, loop.cfg.train.micro_batch,
                                        loop.cfg.log.eval_tokens)
        loop.last_val = found
        loss = found.get("val_loss")
        if loss is not None and (loop.best_val is None or loss < loop.best_val[0]):
            loop.best_val = (loss, loop.step)
        loop.ensure_row().update(found, val_set=self.identity)
