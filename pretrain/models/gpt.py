"""GPT-1-style "early transformer" (the paper's baseline): learned positions, post-LayerNorm blocks
(`LN(x + Attn(x))`, `LN(x + MLP(x))`), GELU MLP, biases, dropout (model.dropout; GPT-1 used 0.1)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pretrain.models.common import CausalLM, GeluMLP, init_transformer_weights


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.heads, self.dropout = cfg.heads, cfg.dropout
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.out = nn.Linear(cfg.d_model, cfg.d_model)
        self.resid_dropout = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.resid_dropout(self.out(y.transpose(1, 2).reshape(b, t, d)))


class GPTBlock(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.attn = CausalSelfAttention(cfg)
        self.attn_norm = nn.LayerNorm(cfg.d_model)
        self.mlp = GeluMLP(cfg.d_model, cfg.ffn_mult * cfg.d_model, cfg.dropout)
        self.mlp_norm = nn.LayerNorm(cfg.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attn_norm(x + self.attn(x))
        return self.mlp_norm(x + self.mlp(x))


class GPT(CausalLM):
    def __init__(self, cfg):
        super().__init__(cfg)  # post-LN: the last block already ends in a LayerNorm
        self.position_embedding = nn.Embedding(cfg.n_ctx, cfg.d_model)
        self.embed_dropout = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
        self.blocks = nn.ModuleList(GPTBlock(cfg) for _ in range(cfg.n_layers))
        init_transformer_weights(self)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        self.check_length(input_ids)
        positions = torch.arange(input_ids.size(1), device=input_ids.device)
        return self.embed_dropout(self.embedding(input_ids) + self.position_embedding(positions))
