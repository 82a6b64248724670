"""Token-mixing kernels: a causal matrix product that skips the masked half, and Toeplitz mixing.

Layout ("time-major"): a mixing stage maps x [G, T*ib, N] -> y [G, T*ob, N]. Rows are ordered
(time, out_block) and columns (time, in_block), so the b time steps of one tile are a contiguous run
of b*ob rows / b*ib columns and the causal mask is block-lower-triangular in tiles. N is the batch
folded into the GEMM columns (batch * channels), as in `MaskedMatrix`.

`lower_tile_matmul` computes y = W @ x + bias for a W that is zero above its (block) diagonal, over
the lower triangle only: per row tile, one GEMM for the block left of its diagonal tile and a few for
the diagonal tile's sub-tiles (`mixing_rules.lower_pieces`), so it multiplies T*(T+sub)/2 entries per
column instead of the dense product's T*T. The backward does the same: dW only on those pieces (the
upper tiles are exact zeros, never computed), dx = W^T dy per column tile over the rows below. The
caller masks W (the diagonal tiles' upper triangles) inside autograd, so masked entries still get
exactly zero gradient.

Toeplitz mixing (W_ij = w_(i-j) for i >= j: one weight per distance) runs either as that matrix
through the dense/blocked product, or as a causal convolution by FFT in O(T log T)
(`fft_causal_conv`), or one position at a time for generation (`MaskedMatrix.step` in mixer.py).
"""
from __future__ import annotations

import torch

from pretrain.models.mixing_rules import fft_length, lower_pieces, sub_tile_size, tile_size, time_tiles


class LowerTileMatmul(torch.autograd.Function):
    """y = W @ x + bias over the lower tiles of a block-lower-triangular W (see the module docstring).
    w [G, T*ob, T*ib], x [G, T*ib, N], bias [G, T*ob] (time-major; added per row)."""

    @staticmethod
    def forward(ctx, w, x, bias, seq_len: int, out_blocks: int, in_blocks: int, tile: int):
        ob, ib = out_blocks, in_blocks
        sub = sub_tile_size(tile)
        # Start from the bias, then every piece accumulates (beta=1): the bias costs no extra pass.
        y = bias.unsqueeze(-1).expand(-1, -1, x.size(2)).contiguous()
        for r0, r1, c0, c1 in lower_pieces(seq_len, tile, sub):
            _accumulate(y[:, r0 * ob:r1 * ob], w[:, r0 * ob:r1 * ob, c0 * ib:c1 * ib], x[:, c0 * ib:c1 * ib])
        ctx.save_for_backward(w, x)
        ctx.shape = (seq_len, ob, ib, tile, sub)
        return y

    @staticmethod
    def backward(ctx, dy):
        w, x = ctx.saved_tensors
        seq_len, ob, ib, tile, sub = ctx.shape
        dy = dy.contiguous()
        dw = dx = dbias = None
        if ctx.needs_input_grad[0]:
            dw = torch.zeros_like(w)  # the upper tiles stay exact zeros: never computed
            for r0, r1, c0, c1 in lower_pieces(seq_len, tile, sub):
                torch.bmm(dy[:, r0 * ob:r1 * ob], x[:, c0 * ib:c1 * ib].transpose(1, 2),
                          out=dw[:, r0 * ob:r1 * ob, c0 * ib:c1 * ib])
        if ctx.needs_input_grad[1]:
            dx = _input_grad(w, dy, x, ctx.shape)
        if ctx.needs_input_grad[2]:
            dbias = dy.sum(-1)
        return dw, dx, dbias, None, None, None, None


def _input_grad(w, dy, x, shape) -> torch.Tensor:
    """dx = W^T dy by column tile: column tile [start, end) is read by the rows of time >= start --
    its diagonal tile (by sub-tile, each from its own start) and, in one GEMM, every row below it."""
    seq_len, ob, ib, tile, sub = shape
    dx = torch.empty_like(x)
    for start, end in time_tiles(seq_len, tile):
        for s0, s1 in time_tiles(end - start, sub):
            c0, c1 = start + s0, start + s1
            torch.bmm(w[:, c0 * ob:end * ob, c0 * ib:c1 * ib].transpose(1, 2), dy[:, c0 * ob:end * ob],
                      out=dx[:, c0 * ib:c1 * ib])
        if end < seq_len:
            _accumulate(dx[:, start * ib:end * ib], w[:, end * ob:, start * ib:end * ib].transpose(1, 2),
                        dy[:, end * ob:])
    return dx


def _accumulate(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """out += a @ b in place (a view into the result). The out= form rather than baddbmm_: the same
    kernel, and FlopCounterMode counts it (it has no formula for the in-place op)."""
    torch.baddbmm(out, a, b, out=out)


def lower_tile_matmul(w: torch.Tensor, x: torch.Tensor, seq_len: int, out_blocks: int = 1,
                      in_blocks: int = 1, tile: int | None = None,
                      bias: torch.Tensor | None = None) -> torch.Tensor:
    """W [G, T*ob, T*ib] (time-major, zero above the block diagonal) @ x [G, T*ib, N] (+ bias
    [G, T*ob] per row) -> [G, T*ob, N], computing only the lower tiles. tile: time steps per tile
    (default: `tile_size(seq_len)`)."""
    if w.shape[-2:] != (seq_len * out_blocks, seq_len * in_blocks) or x.size(1) != seq_len * in_blocks:
        raise ValueError(f"shapes do not match: W {tuple(w.shape)}, x {tuple(x.shape)}, T={seq_len}, "
                         f"blocks {out_blocks}x{in_blocks}")
    if bias is None:
        bias = w.new_zeros(()).expand(w.size(0), w.size(1))
    device = x.device.type
    # Autocast does not reach inside a custom Function: cast here as it would cast a matmul (bf16 on
    # CPU/GPU), then run the tiles with autocast off so the in-place GEMMs see matching dtypes.
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else torch.promote_types(
        w.dtype, x.dtype)
    with torch.autocast(device, enabled=False):
        return LowerTileMatmul.apply(w.to(dtype), x.to(dtype).contiguous(), bias.to(dtype), seq_len,
                                     out_blocks, in_blocks, tile or tile_size(seq_len))


def toeplitz_matrix(weight: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Per-distance weights [..., n] -> the lower-triangular Toeplitz matrices [..., T, T] with
    W_ij = w_(i-j) for i >= j and exact zeros above the diagonal.

    Row i is a length-T window of [w_(T-1) .. w_0, 0 .. 0] (reversed weights, then T-1 zeros) starting
    at T-1-i: views (unfold) of one short vector, no gather, so autograd saves no T x T index."""
    w = weight[..., :seq_len]
    reversed_then_zeros = torch.cat([w.new_zeros(*w.shape[:-1], seq_len - 1), w], -1).flip(-1)
    return reversed_then_zeros.unfold(-1, seq_len, 1).flip(-2)


def _block_product(w_f: torch.Tensor, x_f: torch.Tensor) -> torch.Tensor:
    """Y[g, o, n, f] = sum_b W[g, o, b, f] X[g, b, n, f]: the per-frequency block product."""
    if w_f.size(1) == 1 and w_f.size(2) == 1:
        return x_f * w_f  # [G,1,N,F] * [G,1,1,F]: plain per-head convolution
    return torch.einsum("gobf,gbnf->gonf", w_f, x_f)


class FFTCausalConv(torch.autograd.Function):
    """The causal convolution by FFT with its own backward. Both gradients are correlations, computed
    with real transforms too: dx = irfft(rfft(dy) * conj(W)), dW = irfft(sum_n rfft(dy) * conj(X)).
    The zero padding to >= 2T-1 keeps them exact: a lag that would wrap lands on padding. (Autograd
    through torch.fft would run a full complex transform for rfft's backward and keep the padded input.)"""

    @staticmethod
    def forward(ctx, weight, x):
        seq_len = x.size(-1)
        n_fft = fft_length(seq_len)
        x_f = torch.fft.rfft(x, n=n_fft)
        w_f = torch.fft.rfft(weight, n=n_fft)
        ctx.save_for_backward(w_f, x_f)
        return torch.fft.irfft(_block_product(w_f, x_f), n=n_fft)[..., :seq_len]

    @staticmethod
    def backward(ctx, dy):
        w_f, x_f = ctx.saved_tensors
        seq_len = dy.size(-1)
        n_fft = fft_length(seq_len)
        dy_f = torch.fft.rfft(dy, n=n_fft)  # [G, ob, N, F]
        dw = dx = None
        if ctx.needs_input_grad[0]:
            if w_f.size(1) == 1 and w_f.size(2) == 1:
                dw_f = (dy_f * x_f.conj()).sum(-2, keepdim=True)
            else:
                dw_f = torch.einsum("gonf,gbnf->gobf", dy_f, x_f.conj())
            dw = torch.fft.irfft(dw_f, n=n_fft)[..., :seq_len]
        if ctx.needs_input_grad[1]:
            dx_f = _block_product(w_f.conj().transpose(1, 2), dy_f)  # W^T per frequency, conjugated
            dx = torch.fft.irfft(dx_f, n=n_fft)[..., :seq_len]
        return dw, dx


def fft_causal_conv(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """y[g, o, :, t] = sum_b sum_(s<=t) weight[g, o, b, t-s] * x[g, b, :, s], by FFT.

    weight [G, ob, ib, n>=T], x [G, ib, N, T] (time last) -> [G, ob, N, T]. Zero-padding to >= 2T-1
    makes the circular convolution linear, so nothing wraps from the end of the sequence to its start:
    position t reads inputs s <= t only (up to float rounding of the transforms). Runs in fp32
    (torch's CPU FFT has no bf16) and returns x's dtype."""
    seq_len = x.size(-1)
    with torch.autocast(x.device.type, enabled=False):
        y = FFTCausalConv.apply(weight[..., :seq_len].float(), x.float().contiguous())
    return y.to(x.dtype)
