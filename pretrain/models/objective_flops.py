"""FLOPs per token of the wrapper models (bidirectional, encoder-decoder, multi-token heads), from the
family cost model in `pretrain.models.flops` (same convention: dense matmul FLOPs, training = 3 x
forward). Torch-free, like `flops.py`: launchers and planners call it without building a model.
Checked against `FlopCounterMode` on real wrapper models in tests/test_objective_models.py.
"""
from __future__ import annotations

import dataclasses

from pretrain.models.flops import forward_flops_breakdown


def _blocks_and_head(model_cfg, n_layers: int, n_ctx: int | None, useful: bool) -> tuple[float, float]:
    """(forward FLOPs per token of n_layers blocks, of one lm_head)."""
    fields = {"n_layers": n_layers}
    if getattr(model_cfg, "bidirectional", False):
        fields["bidirectional"] = False
    parts = forward_flops_breakdown(dataclasses.replace(model_cfg, **fields), n_ctx, useful)
    head = parts.pop("lm_head")
    return float(sum(parts.values())), float(head)


def bidirectional_forward_flops(model_cfg, n_ctx: int | None = None, useful: bool = False) -> float:
    """Two streams through every layer (the mixer's reverse mixing costs what the forward one does and
    both streams pass the shared FFN; the transformer runs a second stack), one lm_head on the sum."""
    blocks, head = _blocks_and_head(model_cfg, model_cfg.n_layers, n_ctx, useful)
    return 2 * blocks + head


def encoder_decoder_forward_flops(model_cfg, encoder_layers: int, decoder_layers: int,
                                  n_ctx: int | None = None, useful: bool = False) -> float:
    """Encoder blocks + decoder blocks + the decoder's lm_head (the encoder has none)."""
    encoder, _ = _blocks_and_head(model_cfg, encoder_layers, n_ctx, useful)
    decoder, head = _blocks_and_head(model_cfg, decoder_layers, n_ctx, useful)
    return encoder + decoder + head


def multi_token_forward_flops(model_cfg, predict: int, n_ctx: int | None = None, useful: bool = False) -> float:
    """One trunk pass + `predict` lm_heads."""
    blocks, head = _blocks_and_head(model_cfg, model_cfg.n_layers, n_ctx, useful)
    return blocks + predict * head


def training(forward_flops: float) -> float:
    """Forward + backward, the convention of `pretrain.models.flops`."""
    return 3.0 * forward_flops
