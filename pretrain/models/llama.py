"""Llama-style transformer: RMSNorm, RoPE (theta 10,000 by default), SwiGLU FFN, causal
`scaled_dot_product_attention`, no biases, untied by default, final RMSNorm before the lm_head."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pretrain.models.common import CausalLM, SwiGLU, init_transformer_weights


def rope_tables(seq_len: int, head_dim: int, theta: float, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin [seq_len, head_dim/2] in fp32 for the rotate-half form of rotary embeddings.

    Computed per call rather than kept as buffers: a bf16 engine (DeepSpeed) casts every floating
    buffer, and bf16 angles lose the positions' precision. The cost is O(T * head_dim)."""
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(seq_len, device=device, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, H, T, hd]; rotates the pairs (x[..., i], x[..., i + hd/2]) by position-dependent angles."""
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class RopeAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.heads = cfg.heads
        self.head_dim = cfg.d_model // cfg.heads
        if self.head_dim % 2:
            raise ValueError(f"llama: head dim d_model/heads = {self.head_dim} must be even for RoPE")
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.out = nn.Linear(cfg.d_model, cfg.d_model, bias=False)
        self.rope_theta = cfg.rope_theta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        cos, sin = rope_tables(t, self.head_dim, self.rope_theta, x.device)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.out(y.transpose(1, 2).reshape(b, t, d))


def _rms_norm(cfg) -> nn.Module:
    # model.norm = false (the flexibility ablation) removes every RMSNorm, the final one included.
    return nn.RMSNorm(cfg.d_model, eps=1e-6) if cfg.norm else nn.Identity()


class LlamaBlock(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.residual = cfg.residual  # model.residual = false: the ablation without skip connections
        self.attn_norm = _rms_norm(cfg)
        self.attn = RopeAttention(cfg)
        self.ffn_norm = _rms_norm(cfg)
        self.ffn = SwiGLU(cfg.d_model, cfg.ffn_mult * cfg.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.attn(self.attn_norm(x))
        x = x + y if self.residual else y
        y = self.ffn(self.ffn_norm(x))
        return x + y if self.residual else y


class Llama(CausalLM):
    def __init__(self, cfg):
        super().__init__(cfg, final_norm=_rms_norm(cfg))
        self.blocks = nn.ModuleList(LlamaBlock(cfg) for _ in range(cfg.n_layers))
        init_transformer_weights(self)
