"""The masked mixer's variants of the improvement study (issue 15; docs/results/improvement.md), as
`[model]` options of the mixer family. Off by default: a config without them builds exactly the
mixer of pretrain/models/mixer.py (same modules, same random draws).

  mixing_init = "running_mean"  every mixing matrix starts as the causal running mean: row i holds
                                1/(i+1) on and below the diagonal (spread over the kernel taps), bias 0
  row_sum_one = true            each masked row is shifted to sum to one: W'_ij = W_ij + (1 - S_i)/(i+1)
                                (S_i the row's sum). Signed entries and exact zeros stay possible,
                                unlike a softmax, which gives every past token some weight
  distance_decay = true         a learned factor per distance (one vector per head and stage, init 1)
                                multiplies the matrix: W_ij * d_(i-j)
  mixing_gate = true            the mixing output times sigmoid(Linear(mixing input)), element-wise
  attention_layers = [i, ...]   those layers mix by causal RoPE attention (Llama's `RopeAttention`,
                                `attention_heads` heads, transformer init) instead of a matrix: a hybrid

Validation and the cost terms are torch-free: pretrain/models/mixer_variant_rules.py.
"""
from __future__ import annotations

import dataclasses
import functools

import torch
from torch import nn

from pretrain.models.common import init_transformer_weights
from pretrain.models.llama import RopeAttention
from pretrain.models.mixer import MaskedMatrix, ToeplitzMatrix, TokenMixing
from pretrain.models.mixing_ops import toeplitz_matrix


class VariantMatrix(MaskedMatrix):
    """A full causal mixing matrix with the running-mean init, the sum-one rows and/or the learned
    per-distance decay. Every product path (dense, blocked, one row for decoding) reads the same
    effective matrix, so causality and the exact-zero gradients of masked entries carry over."""

    def __init__(self, n_ctx: int, groups: int = 1, out_blocks: int = 1, in_blocks: int = 1,
                 softmax: bool = False, impl: str = "dense", *, init: str = "uniform",
                 row_sum_one: bool = False, decay: bool = False):
        super().__init__(n_ctx, groups, out_blocks, in_blocks, softmax, impl)
        self.row_sum_one = row_sum_one
        # 1 / (number of entries a row may use): i+1 columns in each of the in_blocks blocks
        self.register_buffer("inv_row_len", 1.0 / ((torch.arange(n_ctx) + 1.0) * in_blocks)[:, None],
                             persistent=False)
        # one factor per distance, shared by the rows (the prior a full matrix only learns row by row)
        self.decay = nn.Parameter(torch.ones(groups, 1, 1, n_ctx)) if decay else None
        if init == "running_mean":
            with torch.no_grad():
                # softmax rows of equal logits are the running mean already: zeros
                self.weight.copy_(torch.zeros_like(self.weight) if softmax else self.mask * self.inv_row_len)
                self.bias.zero_()

    def _blocks(self, seq_len: int) -> torch.Tensor:
        w = super()._blocks(seq_len)
        return w if self.decay is None else w * toeplitz_matrix(self.decay, seq_len)

    def _masked_blocks(self, seq_len: int, layout) -> torch.Tensor:
        if not self.row_sum_one:
            return super()._masked_blocks(seq_len, layout)
        mask = self.mask[:seq_len, :seq_len]
        w = self._blocks(seq_len) * mask
        row_sums = w.sum(dim=(2, 4), keepdim=True)  # over in-blocks and columns: [G, ob, 1, T, 1]
        # re-masked: the shift must not reach the future
        return layout((w + (1 - row_sums) * self.inv_row_len[:seq_len]) * mask)

    def row_weights(self, position: int) -> torch.Tensor:
        if self.softmax:  # only the init differs: the plain softmax row
            return super().row_weights(position)
        w = self.weight[..., position, :position + 1]
        if self.decay is not None:
            w = w * self.decay[..., :position + 1].flip(-1)  # d_(t-s) for s = 0..t
        if self.row_sum_one:
            w = w + (1 - w.sum(dim=(2, 3), keepdim=True)) * self.inv_row_len[position]
        return w


class GatedMixing(nn.Module):
    """`mixing(x) * sigmoid(gate(x))`: a data-dependent, per-position and per-feature gate on the
    token mixing's output (one d x d Linear; the mixing itself is unchanged)."""

    def __init__(self, cfg, mixing: nn.Module):
        super().__init__()
        self.mixing = mixing
        self.gate = nn.Linear(cfg.d_model, cfg.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mixing(x) * torch.sigmoid(self.gate(x))

    def step(self, x: torch.Tensor, history) -> torch.Tensor:
        return self.mixing.step(x, history) * torch.sigmoid(self.gate(x))


def attention_mixing(cfg) -> nn.Module:
    """The hybrid's attention layer: Llama's causal RoPE attention with `attention_heads` heads and the
    transformers' N(0, 0.02) init (the mixer's own init is PyTorch's default)."""
    attention = RopeAttention(dataclasses.replace(cfg, heads=cfg.attention_heads))
    init_transformer_weights(attention)
    return attention


def uses_variant_matrix(cfg) -> bool:
    return cfg.mixing_init != "uniform" or cfg.row_sum_one or cfg.distance_decay


def stage_class(cfg):
    """What TokenMixing builds its masked stages with (the constructor MaskedMatrix has)."""
    if cfg.mixing == "toeplitz":
        return ToeplitzMatrix
    if not uses_variant_matrix(cfg):
        return MaskedMatrix
    return functools.partial(VariantMatrix, init=cfg.mixing_init, row_sum_one=cfg.row_sum_one,
                             decay=cfg.distance_decay)


def sequence_mixing(cfg, layer: int) -> nn.Module:
    """Layer `layer`'s sequence mixing: attention in a hybrid's attention layers, else the masked
    token mixing (gated with `mixing_gate`)."""
    if layer in cfg.attention_layers:
        return attention_mixing(cfg)
    mixing = TokenMixing(cfg)
    return GatedMixing(cfg, mixing) if cfg.mixing_gate else mixing
