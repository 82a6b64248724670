"""Token-mixing kernels: a causal matrix product that skips the masked half, and Toeplitz mixing.

Layout ("time-major"): a mixing stage maps x [G, T*ib, N] -> y [G, T*ob, N]. Rows are ordered
(time, out_block) and columns (time, in_block), so the b time steps of one tile are a contiguous run
of b*ob rows / b*ib columns and the causal mask is block-lower-triangular in tiles. N is the batch
folded into the GEMM columns (batch * channels), as in `MaskedMatrix`.

`lower_tile_matmul` computes y = W @ x for a W that is zero above its (block) diagonal, over the
lower tiles only: row tile r reads column tiles 0..r (one GEMM per row tile), so it executes
T*(T+tile) multiply-adds per column instead of T*T (the dense product's). The backward does the same:
dW only on the lower tiles (the upper tiles are exact zeros, never computed), dx = W^T dy per column
tile over row tiles r..end. The caller masks W (the diagonal tiles' upper triangles) inside autograd,
so masked entries still get exactly zero gradient.

Toeplitz mixing (W_ij = w_(i-j) for i >= j: one weight per distance) runs either as that matrix
through the dense/blocked product, or as a causal convolution by FFT in O(T log T)
(`fft_causal_conv`), or one position at a time for generation (`toeplitz_step`).
"""
from __future__ import annotations

import torch

from pretrain.models.mixing_rules import tile_size


def time_tiles(seq_len: int, tile: int) -> list[tuple[int, int]]:
    """[(start, end)) time ranges of `tile` steps covering 0..seq_len (the last may be shorter)."""
    if tile < 1:
        raise ValueError(f"tile must be >= 1, got {tile}")
    return [(start, min(start + tile, seq_len)) for start in range(0, seq_len, tile)]


class LowerTileMatmul(torch.autograd.Function):
    """y = W @ x over the lower tiles of a block-lower-triangular W (see the module docstring)."""

    @staticmethod
    def forward(ctx, w, x, seq_len: int, out_blocks: int, in_blocks: int, tile: int):
        ob, ib = out_blocks, in_blocks
        y = x.new_empty(x.size(0), seq_len * ob, x.size(2))
        for start, end in time_tiles(seq_len, tile):
            # row tile [start, end) reads only the columns of time < end
            torch.bmm(w[:, start * ob:end * ob, :end * ib], x[:, :end * ib], out=y[:, start * ob:end * ob])
        ctx.save_for_backward(w, x)
        ctx.shape = (seq_len, ob, ib, tile)
        return y

    @staticmethod
    def backward(ctx, dy):
        w, x = ctx.saved_tensors
        seq_len, ob, ib, tile = ctx.shape
        dy = dy.contiguous()
        tiles = time_tiles(seq_len, tile)
        dw = dx = None
        if ctx.needs_input_grad[0]:
            dw = torch.zeros_like(w)  # the upper tiles stay exact zeros: never computed
            for start, end in tiles:
                torch.bmm(dy[:, start * ob:end * ob], x[:, :end * ib].transpose(1, 2),
                          out=dw[:, start * ob:end * ob, :end * ib])
        if ctx.needs_input_grad[1]:
            dx = torch.empty_like(x)
            for start, end in tiles:
                # column tile [start, end) is read by the row tiles of time >= start
                torch.bmm(w[:, start * ob:, start * ib:end * ib].transpose(1, 2), dy[:, start * ob:],
                          out=dx[:, start * ib:end * ib])
        return dw, dx, None, None, None, None


def lower_tile_matmul(w: torch.Tensor, x: torch.Tensor, seq_len: int, out_blocks: int = 1,
                      in_blocks: int = 1, tile: int | None = None) -> torch.Tensor:
    """W [G, T*ob, T*ib] (time-major, zero above the block diagonal) @ x [G, T*ib, N] -> [G, T*ob, N],
    computing only the lower tiles. tile: time steps per tile (default: `tile_size(seq_len)`)."""
    if w.shape[-2:] != (seq_len * out_blocks, seq_len * in_blocks) or x.size(1) != seq_len * in_blocks:
        raise ValueError(f"shapes do not match: W {tuple(w.shape)}, x {tuple(x.shape)}, T={seq_len}, "
                         f"blocks {out_blocks}x{in_blocks}")
    device = x.device.type
    # Autocast does not reach inside a custom Function: cast here as it would cast a matmul (bf16 on
    # CPU/GPU), then run the tiles with autocast off so the out= GEMMs see matching dtypes.
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else torch.promote_types(
        w.dtype, x.dtype)
    with torch.autocast(device, enabled=False):
        return LowerTileMatmul.apply(w.to(dtype), x.to(dtype).contiguous(), seq_len, out_blocks,
                                     in_blocks, tile or tile_size(seq_len))


def toeplitz_matrix(weight: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Per-distance weights [..., n] -> the lower-triangular Toeplitz matrices [..., T, T] with
    W_ij = w_(i-j) for i >= j and exact zeros above the diagonal."""
    pos = torch.arange(seq_len, device=weight.device)
    distance = pos.view(-1, 1) - pos.view(1, -1)
    causal = distance >= 0
    full = weight[..., distance.clamp(min=0)]
    return full * causal.to(full.dtype)  # 0/1 product: exact zeros, and zero gradient, above the diagonal


def fft_length(seq_len: int) -> int:
    """FFT size for a linear (not circular) causal convolution of length T: >= 2T-1, a power of 2."""
    return 1 << (2 * seq_len - 1).bit_length() if seq_len > 1 else 2


def fft_causal_conv(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """y[g, o, :, t] = sum_b sum_(s<=t) weight[g, o, b, t-s] * x[g, b, :, s], by FFT.

    weight [G, ob, ib, n>=T], x [G, ib, N, T] (time last) -> [G, ob, N, T]. Zero-padding to >= 2T-1
    makes the circular convolution linear, so nothing wraps from the end of the sequence to its start:
    position t reads inputs s <= t only (up to float rounding of the transforms)."""
    seq_len = x.size(-1)
    n_fft = fft_length(seq_len)
    x_f = torch.fft.rfft(x.float(), n=n_fft)
    w_f = torch.fft.rfft(weight[..., :seq_len].float(), n=n_fft)
    if weight.size(1) == 1 and weight.size(2) == 1:
        y_f = x_f * w_f  # [G,1,N,F] * [G,1,1,F]: plain per-head convolution
    else:
        y_f = torch.einsum("gobf,gbnf->gonf", w_f, x_f)
    y = torch.fft.irfft(y_f, n=n_fft)[..., :seq_len]
    return y.to(x.dtype)


def toeplitz_step(weight: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
    """The output at the newest position of a causal Toeplitz mixing, from the inputs so far.

    weight [G, ob, ib, n], history [G, ib, t+1, c] (oldest first) -> [G, ob, c]: sum over s <= t of
    w_(t-s) x_s, O(t) per step; no T x T matrix is built."""
    steps = history.size(2)
    lags = weight[..., :steps].flip(-1)  # lag t-s for s = 0..t
    return torch.einsum("gobs,gbsc->goc", lags, history)
