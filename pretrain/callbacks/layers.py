"""Per-block gradient and parameter norms every `log.stats_every` steps, in the row as `layer_stats`."""
from __future__ import annotations

import math

from pretrain.callbacks.base import Callback, Loop


def layer_stats(engine) -> dict[str, float]:
    """Per-block gradient and parameter norms (call between the last backward and step); works at any ZeRO
    stage through DeepSpeed's full-tensor accessors (collective under ZeRO-3: every rank calls it)."""
    from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_grad

    out = {}
    for i, block in enumerate(engine.module.blocks):
        g2 = p2 = 0.0
        for p in block.parameters():
            grad = safe_get_full_grad(p)  # ZeRO 0 keeps plain tensors: the accessors return None there
            grad = p.grad if grad is None else grad
            param = safe_get_full_fp32_param(p)
            param = p.detach() if param is None else param
            if grad is not None:
                g2 += float(grad.float().pow(2).sum())
            p2 += float(param.float().pow(2).sum())
        out[f"block{i:02d}_grad_norm"] = math.sqrt(g2)
        out[f"block{i:02d}_param_norm"] = math.sqrt(p2)
    return out


class LayerStats(Callback):

    def due(self, loop: Loop) -> bool:
        every = loop.cfg.log.stats_every
        return bool(every) and (loop.step + 1) % every == 0  # called before the step counter moves

    def pre_optim_step(self, loop: Loop) -> None:
        loop.layer_stats = layer_stats(loop.engine) if self.due(loop) else None

    def on_step(self, loop: Loop) -> None:
        if loop.row is not None and loop.layer_stats:
            loop.row["layer_stats"] = loop.layer_stats
