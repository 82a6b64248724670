"""Multi-token prediction: a registered family model (the trunk) with k output heads; head i predicts
token t+1+i at position t. Head 0 is the family's own lm_head, so `logits` is the ordinary next-token
prediction and validation/generation see a plain causal LM.

The paper trains MTP with k forward passes, pass i on shift 1+i, losses summed; this is the shared
trunk form (one trunk pass, k heads: Gloeckle et al. 2024), which the issue allows. Its cost is one
trunk plus k lm_heads per token (pretrain.models.objective_flops).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from pretrain.models.common import CausalLM, CausalLMOutput, next_token_loss


@dataclass
class MultiTokenOutput(CausalLMOutput):
    head_losses: list[torch.Tensor] = field(default_factory=list)  # loss of head i (shift 1+i)


def shifted_labels(next_labels: torch.Tensor, shift: int) -> torch.Tensor:
    """Targets of head `shift` (0-based) from the next-token labels: labels[t + shift] (ignored past
    the end). Needs no data beyond the loader's (inputs, next-token labels) pair."""
    if shift == 0:
        return next_labels
    out = torch.full_like(next_labels, -100)
    out[:, :-shift] = next_labels[:, shift:]
    return out


class MultiTokenHeads(nn.Module):
    def __init__(self, trunk: CausalLM, predict: int):
        super().__init__()
        if predict < 1:
            raise ValueError(f"objective.predict must be >= 1, got {predict}")
        self.trunk, self.cfg, self.n_ctx = trunk, trunk.cfg, trunk.n_ctx
        d, vocab = trunk.cfg.d_model, trunk.cfg.vocab_size
        self.extra_heads = nn.ModuleList(nn.Linear(d, vocab, bias=False) for _ in range(predict - 1))
        for head in self.extra_heads:  # the trunk's lm_head initialisation, whatever the family uses
            head.weight.data.copy_(trunk.lm_head.weight.data)

    @property
    def embedding(self) -> nn.Embedding:
        return self.trunk.embedding

    @property
    def lm_head(self) -> nn.Linear:
        return self.trunk.lm_head

    @property
    def blocks(self) -> nn.ModuleList:
        return self.trunk.blocks

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None) -> MultiTokenOutput:
        hidden = self.trunk.final_norm(self.trunk.forward_blocks(self.trunk.embed(input_ids)))
        logits = self.trunk.lm_head(hidden)
        if labels is None:
            return MultiTokenOutput(logits=logits)
        losses = [next_token_loss(logits, labels)]
        for i, head in enumerate(self.extra_heads, start=1):
            losses.append(next_token_loss(head(hidden), shifted_labels(labels, i)))
        return MultiTokenOutput(logits=logits, loss=torch.stack(losses).sum(), head_losses=losses)
