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

`[model] mixing = "toeplitz"` makes every n x n block Toeplitz (`ToeplitzMatrix`: one weight per
distance). `mixing_impl` picks how a stage computes (same parameters, same results to rounding):
the dense masked GEMM, the blocked product over the lower tiles only, or (Toeplitz) an FFT
convolution -- see pretrain/models/mixing_ops.py and, for "auto", mixing_rules.py. Generation can
step one token at a time (`MaskedMixer.decode_step`): each stage reads one weight row.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pretrain.models.common import CausalLM, GeluMLP
from pretrain.models.mixing_ops import fft_causal_conv, lower_tile_matmul, toeplitz_matrix
from pretrain.models.mixing_rules import resolve_impl


def _rows_block_major(w: torch.Tensor) -> torch.Tensor:
    """[G, ob, ib, T, T] -> [G, ob*T, ib*T]: rows (block, time), columns (block, time)."""
    g, ob, ib, t = w.shape[:4]
    return w.permute(0, 1, 3, 2, 4).reshape(g, ob * t, ib * t)


def _rows_time_major(w: torch.Tensor) -> torch.Tensor:
    """[G, ob, ib, T, T] -> [G, T*ob, T*ib]: rows (time, block), so a time tile is a row range."""
    g, ob, ib, t = w.shape[:4]
    return w.permute(0, 3, 1, 4, 2).reshape(g, t * ob, t * ib)


def dense_mix(matrix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Block-major matrix [G, ob*T, ib*T] @ x [B, G, ib*T, c] -> [B, G, ob*T, c], one GEMM per group."""
    b, g, cols, c = x.shape
    # One GEMM per group with the batch folded into the columns ([G, C, B*c]): ~15% faster on
    # CPU than a broadcast batched matmul over B, which also sums B partial weight gradients.
    x_cols = x.permute(1, 2, 0, 3).reshape(g, cols, b * c)
    return torch.bmm(matrix, x_cols).view(g, -1, b, c).permute(2, 0, 1, 3)


def blocked_mix(matrix: torch.Tensor, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Time-major causal matrix [G, T*ob, T*ib] @ x [B, G, ib*T, c] + bias [G, ob, T], over the
    matrix's lower tiles only (the bias is added inside the product)."""
    b, g, cols, c = x.shape
    ob, t = bias.shape[1:]
    ib = cols // t
    x_cols = x.view(b, g, ib, t, c).permute(1, 3, 2, 0, 4).reshape(g, t * ib, b * c)
    y = lower_tile_matmul(matrix, x_cols, t, ob, ib, bias=bias.transpose(1, 2).reshape(g, t * ob))
    return y.view(g, t, ob, b, c).permute(3, 0, 2, 1, 4).reshape(b, g, ob * t, c)


def fft_mix(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Toeplitz mixing by FFT: per-distance weight [G, ob, ib, n] over x [B, G, ib*T, c]."""
    b, g, cols, c = x.shape
    ob, ib = weight.shape[1:3]
    t = cols // ib
    x_time_last = x.view(b, g, ib, t, c).permute(1, 2, 0, 4, 3).reshape(g, ib, b * c, t)
    y = fft_causal_conv(weight, x_time_last)  # [G, ob, B*c, T]
    return y.view(g, ob, b, c, t).permute(2, 0, 1, 4, 3).reshape(b, g, ob * t, c)


class MaskedMatrix(nn.Module):
    """`groups` independent causal mixing matrices of shape [out_blocks*T, in_blocks*T], where row
    (o, i) may read column (b, j) only when j <= i. Input [B, G, in_blocks*T, c] -> [B, G, out_blocks*T, c].
    Inputs shorter than n_ctx use the leading T x T sub-block of every n x n block.

    impl: "dense" (one masked GEMM, the numerical reference), "blocked" (only the lower tiles, see
    mixing_ops) or "auto" (by sequence length, `mixing_rules.resolve_impl`). A mask that is not the
    causal one (the bidirectional model's reverse stream re-masks) always runs dense."""

    mixing = "full"

    def __init__(self, n_ctx: int, groups: int = 1, out_blocks: int = 1, in_blocks: int = 1,
                 softmax: bool = False, impl: str = "dense"):
        super().__init__()
        self.n_ctx, self.softmax, self.impl = n_ctx, softmax, impl
        self.weight = nn.Parameter(torch.empty(groups, out_blocks, in_blocks, *self._weight_shape(n_ctx)))
        self.bias = nn.Parameter(torch.empty(groups, out_blocks, n_ctx))
        self.register_buffer("mask", torch.ones(n_ctx, n_ctx).tril(), persistent=False)
        self._causal_mask_checked = None  # the mask object last found causal (identity, not value)
        # Conv1d's default init with the n_ctx*in_blocks inputs as fan-in, as in the original.
        bound = 1.0 / math.sqrt(n_ctx * in_blocks)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    @staticmethod
    def _weight_shape(n_ctx: int) -> tuple[int, ...]:
        return (n_ctx, n_ctx)

    def _blocks(self, seq_len: int) -> torch.Tensor:
        """The unmasked [G, ob, ib, T, T] weight blocks for sequence length T."""
        return self.weight[..., :seq_len, :seq_len]

    def _masked_blocks(self, seq_len: int, layout) -> torch.Tensor:
        t = seq_len
        mask = self.mask[:t, :t]
        w = self._blocks(t)
        if self.softmax:
            # Normalise each row over its unmasked entries only; -inf gives exactly 0 after the
            # softmax (and zero gradient), so the future never leaks (the original's bug).
            w = w.masked_fill(mask == 0, float("-inf"))
            return torch.softmax(layout(w), dim=-1)
        w = w * mask.to(w.dtype)  # a 0/1 mask is exact in any dtype; keeps bf16 weights bf16
        return layout(w)

    def matrix(self, seq_len: int) -> torch.Tensor:
        """The effective masked matrix [G, out_blocks*T, in_blocks*T] for sequence length T."""
        return self._masked_blocks(seq_len, _rows_block_major)

    def running_impl(self, seq_len: int) -> str:
        """The computation a forward at this length runs ("dense", "blocked" or "fft")."""
        impl = resolve_impl(self.mixing, self.impl, seq_len)
        return impl if impl == "dense" or self._mask_is_causal() else "dense"

    def _mask_is_causal(self) -> bool:
        if self._causal_mask_checked is not self.mask:
            causal = torch.equal(self.mask, torch.ones_like(self.mask).tril())
            self._causal_mask_checked = self.mask if causal else None
        return self._causal_mask_checked is self.mask

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g, ob, ib = self.weight.shape[:3]
        t = x.size(2) // ib
        impl = self.running_impl(t)
        if impl == "blocked":
            return blocked_mix(self._masked_blocks(t, _rows_time_major), x, self.bias[..., :t])
        y = fft_mix(self.weight, x) if impl == "fft" else dense_mix(self.matrix(t), x)
        return y + self.bias[..., :t].reshape(g, -1, 1)

    def row_weights(self, position: int) -> torch.Tensor:
        """Row `position` of every causal block, over columns 0..position: [G, ob, ib, position+1]
        (what generation needs for one new token; softmax rows normalised over blocks and columns)."""
        w = self.weight[..., position, :position + 1]
        if self.softmax:
            g, ob, ib, s = w.shape
            return torch.softmax(w.reshape(g, ob, ib * s), -1).view(g, ob, ib, s)  # over blocks and columns
        return w

    def step(self, history: torch.Tensor) -> torch.Tensor:
        """The output at the newest position t from this stage's inputs so far (one sequence):
        history [G, ib, t+1, c] -> [G, ob, c]. Reads one row per block; no T x T matrix is built."""
        t = history.size(2) - 1
        y = torch.einsum("gobs,gbsc->goc", self.row_weights(t), history)
        return y + self.bias[..., t, None]


class ToeplitzMatrix(MaskedMatrix):
    """A causal mixing whose every n x n block is Toeplitz, W_ij = w_(i-j): one weight per distance
    (n parameters per block instead of n^2), the same bias per position. impl "fft" convolves in
    O(T log T); "dense"/"blocked" build the T x T matrix and run the matrix product (the reference)."""

    mixing = "toeplitz"

    def __init__(self, n_ctx: int, groups: int = 1, out_blocks: int = 1, in_blocks: int = 1,
                 softmax: bool = False, impl: str = "auto"):
        if softmax:
            raise ValueError("softmax mixing normalises rows over their length: not a Toeplitz matrix")
        super().__init__(n_ctx, groups, out_blocks, in_blocks, False, impl)

    @staticmethod
    def _weight_shape(n_ctx: int) -> tuple[int, ...]:
        return (n_ctx,)

    def _blocks(self, seq_len: int) -> torch.Tensor:
        return toeplitz_matrix(self.weight, seq_len)

    def running_impl(self, seq_len: int) -> str:
        if not self._mask_is_causal():  # e.g. a reverse-stream re-mask: a Toeplitz matrix has no other form
            raise ValueError("a Toeplitz mixing is causal by construction; it cannot take another mask "
                             "(model.mixing = \"toeplitz\" does not combine with reverse streams)")
        return resolve_impl(self.mixing, self.impl, seq_len)

    def row_weights(self, position: int) -> torch.Tensor:
        return self.weight[..., :position + 1].flip(-1)  # w_(t-s) for s = 0..t


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
        from pretrain.models.mixer_variants import stage_class  # lazy: that module builds on this one
        stage = stage_class(cfg)  # MaskedMatrix, ToeplitzMatrix or a variant's matrix
        impl = cfg.mixing_impl
        if cfg.expansion > 0:
            self.expand = stage(cfg.n_ctx, cfg.heads, cfg.expansion, cfg.kernel, cfg.softmax, impl)
            self.contract = stage(cfg.n_ctx, cfg.heads, 1, cfg.expansion, cfg.softmax, impl)
        else:
            self.mix = stage(cfg.n_ctx, cfg.heads, 1, cfg.kernel, cfg.softmax, impl)

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

    def step(self, x: torch.Tensor, history: "StageHistory") -> torch.Tensor:
        """`forward` for the newest position only (one sequence): x [d] -> [d]."""
        d = x.size(-1)
        if self.heads > 1:
            x = self.head_in(x)
        x = x.view(self.heads, 1, d // self.heads)  # [G, T=1, c]
        if self.kernel > 1:
            x = shifted_copies(x, self.kernel)  # [G, k, c]: tap o at time 0
        stages = [self.expand, self.contract] if self.expansion > 0 else [self.mix]
        for i, stage in enumerate(stages):
            if i and self.activation:
                x = F.gelu(x)
            x = stage.step(history.push(stage, x))  # [G, ob, c]
        x = x.reshape(d)
        return self.head_out(x) if self.heads > 1 else x


class MixerBlock(nn.Module):
    """Pre-norm `x + TokenMix(LN(x))`, `x + FFN(LN(x))`; `norm`/`residual`/`linear` remove parts.
    linear: no norms, no activations, and the FFN's up/down collapse into one d x d matrix."""

    def __init__(self, cfg, layer: int = 0):
        super().__init__()
        from pretrain.models.mixer_variants import sequence_mixing  # lazy: that module builds on this one
        self.residual = cfg.residual
        use_norm = cfg.norm and not cfg.linear
        self.mix_norm = nn.LayerNorm(cfg.d_model) if use_norm else None
        self.ffn_norm = nn.LayerNorm(cfg.d_model) if use_norm else None
        self.mixing = sequence_mixing(cfg, layer)  # TokenMixing unless a variant option says otherwise
        self.ffn = (nn.Linear(cfg.d_model, cfg.d_model) if cfg.linear
                    else GeluMLP(cfg.d_model, cfg.ffn_mult * cfg.d_model))

    def _sub(self, x: torch.Tensor, norm: nn.Module | None, fn: nn.Module) -> torch.Tensor:
        y = fn(norm(x) if norm is not None else x)
        return x + y if self.residual else y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._sub(x, self.mix_norm, self.mixing)
        return self._sub(x, self.ffn_norm, self.ffn)

    def step(self, x: torch.Tensor, history: "StageHistory") -> torch.Tensor:
        x = self._sub(x, self.mix_norm, lambda h: self.mixing.step(h, history))
        return self._sub(x, self.ffn_norm, self.ffn)


class MaskedMixer(CausalLM):
    """No positional encoding: the mixing matrix is position-aware by construction."""

    def __init__(self, cfg):
        final = nn.LayerNorm(cfg.d_model) if cfg.final_norm and not cfg.linear else None
        super().__init__(cfg, final_norm=final)
        self.blocks = nn.ModuleList(MixerBlock(cfg, layer) for layer in range(cfg.n_layers))

    def decode_state(self) -> "StageHistory | None":
        """A fresh state for `decode_step`, or None where incremental decoding does not apply (a
        subclass that changes the forward: it must then be re-run on the window)."""
        hybrid = bool(self.cfg.attention_layers)  # attention layers have no incremental step here
        return StageHistory() if type(self) is MaskedMixer and not hybrid else None

    @torch.no_grad()
    def decode_step(self, token: int, state: "StageHistory") -> torch.Tensor:
        """Feeds the next token (at position state.position) and returns the logits [V] predicting the
        one after it: the last row of `forward` on the tokens so far, at O(t * d) per layer for a
        Toeplitz mixer (one weight vector per block) and one matrix row per block for a full one."""
        if state.position >= self.n_ctx:
            raise ValueError(f"decode_step past model.n_ctx={self.n_ctx}: the window is full; "
                             "re-run the model on the last n_ctx tokens instead")
        x = self.embedding.weight[token]
        for block in self.blocks:
            x = block.step(x, state)
        state.position += 1
        return self.lm_head(self.final_norm(x))


class StageHistory:
    """Every mixing stage's inputs so far, for one sequence: what `MaskedMatrix.step` reads."""

    def __init__(self):
        self.position = 0
        self._inputs: dict[nn.Module, torch.Tensor] = {}

    def push(self, stage: MaskedMatrix, x: torch.Tensor) -> torch.Tensor:
        """Stores x [G, ib, c] as the stage's input at the current position; returns its history
        [G, ib, position+1, c]."""
        buf = self._inputs.get(stage)
        if buf is None:
            buf = x.new_zeros(x.size(0), x.size(1), stage.n_ctx, x.size(2))
            self._inputs[stage] = buf
        buf[:, :, self.position] = x
        return buf[:, :, :self.position + 1]
