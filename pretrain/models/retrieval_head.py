"""The direct-embedding retrieval model (the paper's retrieval A): a frozen language model embeds a query
and n-1 candidate passages; an UNMASKED mixer over the n slots [query, c_1 .. c_{n-1}] and a Linear(d, 1)
scorer give one logit per candidate slot. A wrapper around a registered family, not a copy of one.

Slot mixing is a learned n x n matrix over the slot axis with no causal mask (every slot reads every
other: the query must see the candidates and each candidate the query), then a GELU feed-forward; both
pre-LayerNorm with residuals, as in the mixer blocks.
"""
from __future__ import annotations

import torch
from torch import nn

from pretrain.models.common import GeluMLP


class SlotMixerBlock(nn.Module):
    def __init__(self, n_slots: int, d_model: int, ffn_mult: int = 4):
        super().__init__()
        self.mix_norm, self.ffn_norm = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.mix = nn.Linear(n_slots, n_slots)  # over the slot axis, unmasked
        self.ffn = GeluMLP(d_model, ffn_mult * d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, n, d]
        x = x + self.mix(self.mix_norm(x).transpose(1, 2)).transpose(1, 2)
        return x + self.ffn(self.ffn_norm(x))


class SlotScorer(nn.Module):
    """[B, n, d] slot embeddings (slot 0 the query) -> [B, n-1] candidate logits."""

    def __init__(self, n_slots: int, d_model: int, n_layers: int = 2, ffn_mult: int = 4):
        super().__init__()
        self.n_slots = n_slots
        self.blocks = nn.ModuleList(SlotMixerBlock(n_slots, d_model, ffn_mult) for _ in range(n_layers))
        self.score = nn.Linear(d_model, 1)

    def forward(self, slots: torch.Tensor) -> torch.Tensor:
        if slots.size(1) != self.n_slots:
            raise ValueError(f"{slots.size(1)} slots, the scorer was built for {self.n_slots} "
                             "(objective.candidates); a slot mixer is tied to its group size")
        for block in self.blocks:
            slots = block(slots)
        return self.score(slots[:, 1:]).squeeze(-1)

    def forward_flops(self, d_model: int, ffn_mult: int = 4) -> float:
        """Matmul FLOPs of one group's forward (the stack's FLOP convention: 2 per multiply-add)."""
        n = self.n_slots
        per_block = 2 * n * n * d_model + 4 * ffn_mult * d_model * d_model * n
        return len(self.blocks) * per_block + 2 * d_model * (n - 1)


class RetrievalModel(nn.Module):
    """A frozen embedder (any family, `pretrain.models.sequence_embedding`) plus a trainable SlotScorer."""

    def __init__(self, embedder: nn.Module, scorer: SlotScorer):
        super().__init__()
        self.embedder = embedder.eval()
        for p in self.embedder.parameters():
            p.requires_grad_(False)
        self.scorer = scorer

    @property
    def blocks(self) -> nn.ModuleList:
        """The trainable blocks (the slot mixer's): what layer statistics and activation checkpointing see."""
        return self.scorer.blocks

    def train(self, mode: bool = True):
        super().train(mode)
        self.embedder.eval()  # frozen: no dropout, whatever the trainer asks
        return self

    def forward(self, slots: torch.Tensor) -> torch.Tensor:
        return self.scorer(slots)
