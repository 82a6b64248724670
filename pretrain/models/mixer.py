"""The masked mixer ("flat" mixer of arXiv 2409.01482) and its variants.

A block is `x + TokenMix(LN(x))`, `x + FFN(LN(x))`. TokenMix is a learned n_ctx x n_ctx matrix W
applied over the sequence axis under a causal (lower-triangular, diagonal included) mask with one bias
per position: y_i = sum_{j<=i} W_ij x_j + b_i. The mask multiplies W inside forward (`W * mask`, a
buffer), so masked entries get exactly zero gradient -- unlike the original, which overwrote
`weight.data` outside autograd. The product is one batched matmul over the sequence axis.

Every variant is the same primitive, `MaskedMatrix`: a stack of `out_blocks x in_blocks` masked
n x n matrices per group (head), flattened to one [out_blocks*T, in_blocks*T] matrix so each
stage is a single matmul:
  plain          1 x 1
  kernel k       1 x k   (input = k copies of x shifted along the hidden axis)
  expansion e    e x 1, GELU, then 1 x e
  heads h        h groups, each mixing its own d/h features (Linear(d, d) in, Linear(d, d) out)
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pretrain.models.common import CausalLM, GeluMLP


class MaskedMatrix(nn.Module):
    """`groups` independent causal mixing matrices of shape [out_blocks*T, in_blocks*T], where row
    (o, i) may read column (b, j) only when j <= i. Input [B, G, in_blocks*T, c] -> [B, G, out_blocks*T, c].
    Inputs shorter than n_ctx use the leading T x T sub-block of every n x n block."""

    def __init__(self, n_ctx: int, groups: int = 1, out_blocks: int = 1, in_blocks: int = 1,
                 softmax: bool = False):
        super().__init__()
        self.n_ctx, self.softmax = n_ctx, softmax
        self.weight = nn.Parameter(torch.empty(groups, out_blocks, in_blocks, n_ctx, n_ctx))
        self.bias = nn.Parameter(torch.empty(groups, out_blocks, n_ctx))
        self.register_buffer("mask", torch.ones(n_ctx, n_ctx).tril(), persistent=False)
        # Conv1d's default init with the n_ctx*in_blocks inputs as fan-in, as in the original.
        bound = 1.0 / math.sqrt(n_ctx * in_blocks)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def matrix(self, seq_len: int) -> torch.Tensor:
        """The effective masked matrix [G, out_blocks*T, in_blocks*T] for sequence length T."""
        g, ob, ib = self.weight.shape[:3]
        t = seq_len
        mask = self.mask[:t, :t]
        w = self.weight[..., :t, :t]
        if self.softmax:
            # Normalise each row over its unmasked entries only; -inf gives exactly 0 after the
            # softmax (and zero gradient), so the future never leaks (the original's bug).
            w = w.masked_fill(mask == 0, float("-inf"))
            w = w.permute(0, 1, 3, 2, 4).reshape(g, ob * t, ib * t)
            return torch.softmax(w, dim=-1)
        w = w * mask.to(w.dtype)  # a 0/1 mask is exact in any dtype; keeps bf16 weights bf16
        return w.permute(0, 1, 3, 2, 4).reshape(g, ob * t, ib * t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, g, cols, c = x.shape
        t = cols // self.weight.size(2)
        # One GEMM per group with the batch folded into the columns ([G, C, B*c]): ~15% faster on
        # CPU than a broadcast batched matmul over B, which also sums B partial weight gradients.
        x_cols = x.permute(1, 2, 0, 3).reshape(g, cols, b * c)
        y = torch.bmm(self.matrix(t), x_cols).view(g, -1, b, c).permute(2, 0, 1, 3)
        return y + self.bias[..., :t].reshape(g, -1, 1)


def shifted_copies(x: torch.Tensor, kernel: int) -> torch.Tensor:
    """[..., T, c] -> [..., kernel*T, c]: copy o holds feature c+o-(kernel-1)//2 at feature c (zero
    outside), i.e. the original's Conv1d kernel running along the hidden axis."""
    pad = (kernel - 1) // 2
    padded = F.pad(x, (pad, kernel - 1 - pad))
    c = x.size(-1)
    return torch.cat([padded[..., o:o + c] for o in range(kernel)], dim=-2)


class TokenMixing(nn.Module):
    """Masked mixing over the sequence axis with the configured heads/expansion/kernel/softmax."""

    def __init__(self, cfg):
        super().__init__()
        self.heads, self.kernel, self.expansion = cfg.heads, cfg.kernel, cfg.expansion
        self.activation = not cfg.linear
        if cfg.heads > 1:
            self.head_in = nn.Linear(cfg.d_model, cfg.d_model)
            self.head_out = nn.Linear(cfg.d_model, cfg.d_model)
        if cfg.expansion > 0:
            self.expand = MaskedMatrix(cfg.n_ctx, cfg.heads, cfg.expansion, cfg.kernel, cfg.softmax)
            self.contract = MaskedMatrix(cfg.n_ctx, cfg.heads, 1, cfg.expansion, cfg.softmax)
        else:
            self.mix = MaskedMatrix(cfg.n_ctx, cfg.heads, 1, cfg.kernel, cfg.softmax)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        if self.heads > 1:
            x = self.head_in(x)
        x = x.view(b, t, self.heads, d // self.heads).transpose(1, 2)  # [B, G, T, c]
        if self.kernel > 1:
            x = shifted_copies(x, self.kernel)
        if self.expansion > 0:
            x = self.expand(x)
            x = self.contract(F.gelu(x) if self.activation else x)
        else:
            x = self.mix(x)
        x = x.transpose(1, 2).reshape(b, t, d)
        return self.head_out(x) if self.heads > 1 else x


class MixerBlock(nn.Module):
    """Pre-norm `x + TokenMix(LN(x))`, `x + FFN(LN(x))`; `norm`/`residual`/`linear` remove parts.
    linear: no norms, no activations, and the FFN's up/down collapse into one d x d matrix."""

    def __init__(self, cfg):
        super().__init__()
        self.residual = cfg.residual
        use_norm = cfg.norm and not cfg.linear
        self.mix_norm = nn.LayerNorm(cfg.d_model) if use_norm else None
        self.ffn_norm = nn.LayerNorm(cfg.d_model) if use_norm else None
        self.mixing = TokenMixing(cfg)
        self.ffn = (nn.Linear(cfg.d_model, cfg.d_model) if cfg.linear
                    else GeluMLP(cfg.d_model, cfg.ffn_mult * cfg.d_model))

    def _sub(self, x: torch.Tensor, norm: nn.Module | None, fn: nn.Module) -> torch.Tensor:
        y = fn(norm(x) if norm is not None else x)
        return x + y if self.residual else y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._sub(x, self.mix_norm, self.mixing)
        return self._sub(x, self.ffn_norm, self.ffn)


class MaskedMixer(CausalLM):
    """No positional encoding: the mixing matrix is position-aware by construction."""

    def __init__(self, cfg):
        final = nn.LayerNorm(cfg.d_model) if cfg.final_norm and not cfg.linear else None
        super().__init__(cfg, final_norm=final)
        self.blocks = nn.ModuleList(MixerBlock(cfg) for _ in range(cfg.n_layers))
