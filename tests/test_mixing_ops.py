"""Token-mixing kernels (pretrain/models/mixing_ops.py): the blocked lower-tile product against the
dense masked one (values, gradients, exact zeros), Toeplitz mixing by FFT against its matrix,
causality of every path, and the incremental decoding step against the full forward."""
from __future__ import annotations

import pytest
import torch

from pretrain.models.mixer import MaskedMatrix, ToeplitzMatrix
from pretrain.models.mixing_ops import fft_causal_conv, fft_length, lower_tile_matmul, toeplitz_matrix
from pretrain.models.mixing_rules import (blocked_products, lower_pieces, resolve_impl, sub_tile_size,
                                          tile_size, time_tiles)


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm())


def test_time_tiles_cover_the_sequence_once():
    assert time_tiles(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert time_tiles(8, 8) == [(0, 8)]
    for t in (1, 63, 64, 65, 512, 2048):
        tile = tile_size(t)
        covered = [i for start, end in time_tiles(t, tile) for i in range(start, end)]
        assert covered == list(range(t))
    with pytest.raises(ValueError):
        time_tiles(8, 0)


@pytest.mark.parametrize("groups,ob,ib,t,tile", [(1, 1, 1, 37, 8), (2, 2, 3, 20, 6), (3, 1, 2, 16, 16)])
def test_lower_tile_matmul_matches_the_dense_masked_product(groups, ob, ib, t, tile):
    torch.manual_seed(0)
    mask = torch.ones(t, t).tril()
    blocks = torch.randn(groups, ob, ib, t, t, requires_grad=True)
    x = torch.randn(groups, t * ib, 5, requires_grad=True)
    dy = torch.randn(groups, t * ob, 5)

    def time_major(w):  # [G, ob, ib, T, T] -> rows (time, block), columns (time, block)
        return (w * mask).permute(0, 3, 1, 4, 2).reshape(groups, t * ob, t * ib)

    dense = torch.bmm(time_major(blocks), x)
    dense_grads = torch.autograd.grad(dense, (blocks, x), dy)
    blocked = lower_tile_matmul(time_major(blocks), x, t, ob, ib, tile)
    blocked_grads = torch.autograd.grad(blocked, (blocks, x), dy)
    assert _rel_err(blocked, dense) < 1e-5
    for got, want in zip(blocked_grads, dense_grads):
        assert _rel_err(got, want) < 1e-5
    # masked (future) entries get exactly zero gradient
    assert torch.count_nonzero(blocked_grads[0] * (1 - mask)) == 0


def test_upper_tiles_of_the_weight_gradient_are_never_computed():
    torch.manual_seed(0)
    t, tile = 12, 4
    w = torch.randn(1, t, t).tril().requires_grad_()
    x = torch.randn(1, t, 3)
    (grad,) = torch.autograd.grad(lower_tile_matmul(w, x, t, tile=tile), w, torch.randn(1, t, 3))
    for r, (rs, re) in enumerate(time_tiles(t, tile)):
        for c, (cs, ce) in enumerate(time_tiles(t, tile)):
            tile_grad = grad[0, rs:re, cs:ce]
            assert (torch.count_nonzero(tile_grad) == 0) == (c > r)  # lower tiles are computed, upper are 0


@pytest.mark.parametrize("options", [dict(), dict(groups=2, in_blocks=3), dict(groups=2, out_blocks=2),
                                     dict(softmax=True), dict(groups=2, in_blocks=2, softmax=True)])
def test_masked_matrix_blocked_equals_dense_in_values_and_gradients(options, monkeypatch):
    import pretrain.models.mixing_ops as ops

    monkeypatch.setattr(ops, "tile_size", lambda seq_len: 7)  # several tiles, one that does not divide T
    t = 40
    torch.manual_seed(0)
    dense = MaskedMatrix(n_ctx=48, impl="dense", **options)
    blocked = MaskedMatrix(n_ctx=48, impl="blocked", **options)
    blocked.load_state_dict(dense.state_dict())
    g, ib = dense.weight.shape[0], dense.weight.shape[2]
    x = torch.randn(3, g, ib * t, 4)
    y_dense, y_blocked = dense(x), blocked(x)
    assert blocked.running_impl(t) == "blocked"
    assert _rel_err(y_blocked, y_dense) < 1e-5
    dy = torch.randn_like(y_dense)
    y_dense.backward(dy)
    y_blocked.backward(dy)
    for name in ("weight", "bias"):
        assert _rel_err(getattr(blocked, name).grad, getattr(dense, name).grad) < 1e-5
    future = (1 - dense.mask).bool()
    assert torch.count_nonzero(blocked.weight.grad[..., future]) == 0


def test_a_non_causal_mask_falls_back_to_the_dense_product():
    m = MaskedMatrix(n_ctx=16, impl="blocked")
    assert m.running_impl(16) == "blocked"
    m.mask = torch.ones(16, 16).triu(diagonal=2)  # the bidirectional reverse stream re-masks this way
    assert m.running_impl(16) == "dense"
    x = torch.randn(1, 1, 16, 3)
    assert torch.allclose(m(x), torch.bmm(m.matrix(16), x[0]).unsqueeze(0) + m.bias[..., None])


def test_auto_resolves_by_sequence_length():
    assert resolve_impl("full", "auto", 32) == "dense"
    assert resolve_impl("full", "auto", 4096) == "blocked"
    assert resolve_impl("toeplitz", "auto", 4096) == "fft"
    assert resolve_impl("toeplitz", "dense", 4096) == "dense"


def test_toeplitz_matrix_has_one_weight_per_distance():
    w = torch.arange(1.0, 6.0)  # w_0..w_4
    m = toeplitz_matrix(w, 4)
    for i in range(4):
        for j in range(4):
            assert m[i, j] == (w[i - j] if i >= j else 0.0)
    assert fft_length(512) >= 2 * 512 - 1 and fft_length(1) == 2


@pytest.mark.parametrize("options", [dict(), dict(groups=3), dict(groups=2, out_blocks=2, in_blocks=3)])
def test_toeplitz_fft_dense_and_blocked_agree(options):
    torch.manual_seed(0)
    t = 30
    mods = {impl: ToeplitzMatrix(n_ctx=32, impl=impl, **options) for impl in ("fft", "dense", "blocked")}
    for m in mods.values():
        m.load_state_dict(mods["dense"].state_dict())
    assert mods["dense"].weight.shape[-1] == 32  # n parameters per block, not n^2
    g, ib = mods["dense"].weight.shape[0], mods["dense"].weight.shape[2]
    x = torch.randn(2, g, ib * t, 5)
    dy = None
    outs = {}
    for impl, m in mods.items():
        assert m.running_impl(t) == impl
        y = m(x)
        dy = torch.randn_like(y) if dy is None else dy
        y.backward(dy)
        outs[impl] = y
    for impl in ("fft", "blocked"):
        assert _rel_err(outs[impl], outs["dense"]) < 1e-5
        for name in ("weight", "bias"):
            assert _rel_err(getattr(mods[impl], name).grad, getattr(mods["dense"], name).grad) < 1e-5


@pytest.mark.parametrize("impl", ["dense", "blocked"])
def test_toeplitz_matrix_paths_are_exactly_causal(impl):
    torch.manual_seed(0)
    m = ToeplitzMatrix(n_ctx=24, groups=2, impl=impl)
    x = torch.randn(1, 2, 24, 4)
    for t in (0, 7, 22):
        changed = x.clone()
        changed[:, :, t + 1:] += torch.randn_like(changed[:, :, t + 1:])
        a, b = m(x), m(changed)
        assert torch.equal(a[:, :, :t + 1], b[:, :, :t + 1])
        assert not torch.equal(a[:, :, t + 1:], b[:, :, t + 1:])


def test_fft_path_is_causal_up_to_rounding_and_does_not_wrap_around():
    """The FFT mixes all positions inside the transform, so the past can move by float rounding
    (never bitwise exact); a real leak moves it by O(1). Without the zero padding the convolution
    is circular and the end of the sequence wraps onto its start: the check must catch that."""
    torch.manual_seed(0)
    t = 64
    w = torch.randn(1, 1, 1, t)
    x = torch.randn(1, 1, 8, t)
    changed = x.clone()
    changed[..., 40:] += 10 * torch.randn_like(changed[..., 40:])
    a, b = fft_causal_conv(w, x), fft_causal_conv(w, changed)
    scale = a.abs().max()
    assert (a[..., :40] - b[..., :40]).abs().max() < 1e-5 * scale
    assert (a[..., 40:] - b[..., 40:]).abs().max() > 1e-1 * scale

    def circular(x_):  # the same product with no padding: position t also reads s > t (wrapped)
        return torch.fft.irfft(torch.fft.rfft(x_) * torch.fft.rfft(w[0, 0, 0]), n=t)

    assert (circular(x)[..., :40] - circular(changed)[..., :40]).abs().max() > 1e-1 * scale


@pytest.mark.parametrize("seq_len,tile,sub", [(37, 8, 4), (20, 6, 6), (16, 16, 3), (5, 2, 1)])
def test_lower_pieces_cover_the_lower_triangle_once(seq_len, tile, sub):
    count = torch.zeros(seq_len, seq_len, dtype=torch.int)
    for r0, r1, c0, c1 in lower_pieces(seq_len, tile, sub):
        count[r0:r1, c0:c1] += 1
    assert count.max() == 1 and torch.equal(count.tril(), torch.ones_like(count).tril())
    assert torch.count_nonzero(count.triu(1)) <= seq_len * sub / 2  # only inside the diagonal sub-tiles


def test_blocked_products_count_the_pieces_the_kernel_runs():
    for t in (512, 1024, 2048):  # tiles divide T: T(T+sub)/2
        assert blocked_products(t) == t * (t + sub_tile_size(tile_size(t))) // 2
    assert blocked_products(100) >= 100 * 101 // 2


@pytest.mark.parametrize("cls,impl", [(MaskedMatrix, "blocked"), (ToeplitzMatrix, "blocked"), (ToeplitzMatrix, "fft")])
def test_bf16_autocast_runs_causally_and_close_to_fp32(cls, impl):
    torch.manual_seed(0)
    m = cls(n_ctx=40, groups=2, impl=impl)
    x = torch.randn(2, 2, 40, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x)
        changed = x.clone()
        changed[:, :, 21:] += 1.0
        y_changed = m(changed)
    past, past_changed = y[:, :, :21].float(), y_changed[:, :, :21].float()
    if impl == "fft":  # causal to rounding only (the transform mixes positions), then rounded to bf16
        assert (past - past_changed).abs().max() <= 1e-2 * y.float().abs().max()
    else:
        assert torch.equal(past, past_changed)
    assert _rel_err(y.float(), m(x)) < 2e-2


def test_custom_backwards_pass_gradcheck_in_float64():
    from pretrain.models.mixing_ops import FFTCausalConv, LowerTileMatmul

    torch.manual_seed(0)
    t, ob, ib = 7, 2, 3
    w = torch.randn(2, t * ob, t * ib, dtype=torch.double).requires_grad_()
    x = torch.randn(2, t * ib, 3, dtype=torch.double, requires_grad=True)
    bias = torch.randn(2, t * ob, dtype=torch.double, requires_grad=True)
    # gradcheck perturbs every entry of W; the op reads only the lower pieces, so compare on a W
    # that is block-lower-triangular (what the caller's mask guarantees)
    lower = torch.ones(t, t).tril().repeat_interleave(ob, 0).repeat_interleave(ib, 1).double()
    assert torch.autograd.gradcheck(lambda w_, x_, b_: LowerTileMatmul.apply(w_ * lower, x_, b_, t, ob, ib, 3),
                                    (w, x, bias))
    for blocks in ((1, 1), (2, 3)):
        wt = torch.randn(2, *blocks, t, dtype=torch.double, requires_grad=True)
        xt = torch.randn(2, blocks[1], 3, t, dtype=torch.double, requires_grad=True)
        assert torch.autograd.gradcheck(FFTCausalConv.apply, (wt, xt))
