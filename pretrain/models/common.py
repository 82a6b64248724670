"""Building blocks every model family shares: the output type, the loss, norms, MLPs and the
`CausalLM` base class that fixes the interface the loader, trainer and eval harness rely on.

The interface (never branch on the family outside `pretrain/models`):
    out = model(input_ids, labels=None)   # out.logits [B, T, V], out.loss (mean CE) or None
    model.embed(input_ids) -> [B, T, d]
    model.forward_blocks(x, n_blocks=None) -> [B, T, d]   (no final norm, no lm_head)
    model.embedding (nn.Embedding), model.blocks (nn.ModuleList), model.lm_head (nn.Linear)
Labels are ALREADY aligned with input_ids (labels[b, t] is the target for position t; -100 = ignore):
the loader shifts, the model never does.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = -100


@dataclass
class CausalLMOutput:
    logits: torch.Tensor
    loss: torch.Tensor | None = None


def next_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the non-ignored positions; labels are pre-aligned (no shift here).

    Computed in fp32 even under bf16 autocast: a 50k-way log-softmax in bf16 loses the small
    differences between runs the comparisons are about."""
    if labels.shape != logits.shape[:-1]:
        raise ValueError(f"labels shape {tuple(labels.shape)} must equal input_ids shape "
                         f"{tuple(logits.shape[:-1])} (labels are pre-aligned, one per position)")
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), labels.reshape(-1),
                           ignore_index=IGNORE_INDEX)


class GeluMLP(nn.Module):
    """d -> hidden -> d with GELU and biases (the mixer's and GPT's feed-forward)."""

    def __init__(self, d_model: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.up = nn.Linear(d_model, hidden)
        self.down = nn.Linear(hidden, d_model)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down(F.gelu(self.up(x))))


class SwiGLU(nn.Module):
    """Llama's gated feed-forward: down(silu(gate(x)) * up(x)), no biases."""

    def __init__(self, d_model: int, hidden: int):
        super().__init__()
        self.gate = nn.Linear(d_model, hidden, bias=False)
        self.up = nn.Linear(d_model, hidden, bias=False)
        self.down = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.silu(self.gate(x)) * self.up(x))


def init_transformer_weights(model: nn.Module, std: float = 0.02) -> None:
    """GPT-1 / Hugging Face Llama initialisation: N(0, 0.02) weights, zero biases. (The mixer keeps
    PyTorch's defaults, as the original mixer code did.)"""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)


class CausalLM(nn.Module):
    """Embedding -> blocks -> final norm -> lm_head, plus the shared loss. Families subclass it and
    fill `self.blocks` (and override `embed` when they add positions)."""

    def __init__(self, cfg, final_norm: nn.Module | None = None):
        super().__init__()
        self.cfg = cfg
        self.n_ctx = cfg.n_ctx
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList()
        self.final_norm = final_norm if final_norm is not None else nn.Identity()
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embedding.weight

    def check_length(self, input_ids: torch.Tensor) -> None:
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [batch, seq], got shape {tuple(input_ids.shape)}")
        if input_ids.size(1) > self.n_ctx:
            raise ValueError(
                f"input length {input_ids.size(1)} exceeds model.n_ctx={self.n_ctx} "
                f"({self.cfg.family}); truncate the inputs or build the model with a larger n_ctx")

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        self.check_length(input_ids)
        return self.embedding(input_ids)

    def forward_blocks(self, x: torch.Tensor, n_blocks: int | None = None) -> torch.Tensor:
        for block in self.blocks[:n_blocks] if n_blocks is not None else self.blocks:
            x = block(x)
        return x

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None) -> CausalLMOutput:
        hidden = self.final_norm(self.forward_blocks(self.embed(input_ids)))
        logits = self.lm_head(hidden)
        loss = next_token_loss(logits, labels) if labels is not None else None
        return CausalLMOutput(logits=logits, loss=loss)

    def training_flops_per_token(self, n_ctx: int | None = None, useful: bool = False) -> float:
        """This model's forward+backward FLOPs per token (see pretrain.models.flops)."""
        from pretrain.models.flops import training_flops_per_token
        return training_flops_per_token(self.cfg, n_ctx, useful)

    def num_params(self, non_embedding: bool = False) -> int:
        """Distinct parameters (a tied lm_head counts once). non_embedding drops the token (and
        position) embeddings and an untied lm_head, matching `flops.param_counts`."""
        seen = {id(p): p for p in self.parameters()}
        total = sum(p.numel() for p in seen.values())
        if not non_embedding:
            return total
        skip = {id(self.embedding.weight), id(self.lm_head.weight)}
        skip |= {id(p) for name, p in self.named_parameters() if name.startswith("position")}
        return sum(p.numel() for i, p in seen.items() if i not in skip)
