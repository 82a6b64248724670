"""Which token-mixing computation runs, and its tile size: pure functions of the config (torch-free,
so the cost model, the Slurm launcher and the planner can use them without importing torch).

The thresholds are measured by `benchmarks/bench_mixing.py` (figures in docs/results/models.md).
"""
from __future__ import annotations

import math

MIXINGS = ("full", "toeplitz")
MIXING_IMPLS = ("auto", "dense", "blocked", "fft")

# Below this sequence length the blocked product is not faster than the dense one (too few tiles
# to skip, and per-tile GEMMs too small): "auto" stays dense there. Measured (fwd+bwd, d=256, batch 8,
# one CPU thread): blocked/dense 0.75x at n_ctx 64, 1.05x at 128, 1.28x at 256, 1.5x at 512.
BLOCKED_MIN_SEQ = 256
# Toeplitz by FFT beats the blocked matrix product from this sequence length on. Measured (same
# setting, mixing_ops.FFTCausalConv): matrix/FFT time 0.67x at n_ctx 128, 0.95x at 256, 1.31x at 512,
# 1.97x at 1024, 2.29x at 2048.
FFT_MIN_SEQ = 512


def tile_size(seq_len: int) -> int:
    """Time steps per row tile: T/2, at most 256 (at least 16). Big tiles keep the GEMMs left of each
    diagonal tile big (fast); the diagonal tile itself is split further (`sub_tile_size`).
    Measured (benchmarks/bench_mixing.py, tile sweep): 256 beats 64 and 128 from n_ctx 512 to 2048."""
    return max(16, min(256, seq_len // 2))


def sub_tile_size(tile: int) -> int:
    """Time steps per sub-tile of a diagonal tile: a quarter of the tile, at least 16. The sub-tiles'
    upper halves are the only masked products computed: T*sub/2 of the T*T/2 useful ones."""
    return max(16, tile // 4)


def time_tiles(seq_len: int, tile: int) -> list[tuple[int, int]]:
    """[(start, end)) time ranges of `tile` steps covering 0..seq_len (the last may be shorter)."""
    if tile < 1:
        raise ValueError(f"tile must be >= 1, got {tile}")
    return [(start, min(start + tile, seq_len)) for start in range(0, seq_len, tile)]


def lower_pieces(seq_len: int, tile: int, sub: int) -> list[tuple[int, int, int, int]]:
    """Disjoint rectangles (rows [r0, r1), columns [c0, c1), in time steps) covering the lower triangle,
    diagonal included, row tile by row tile: the block left of the diagonal tile (one big GEMM), then
    the diagonal tile's `sub`-step sub-tiles, each with the columns up to its own end."""
    pieces = []
    for start, end in time_tiles(seq_len, tile):
        if start > 0:
            pieces.append((start, end, 0, start))
        pieces += [(start + s0, start + s1, start, start + s1) for s0, s1 in time_tiles(end - start, sub)]
    return pieces


def blocked_products(seq_len: int) -> int:
    """Matrix entries the blocked product multiplies per column: T(T+1)/2 useful ones plus the upper
    halves of the diagonal sub-tiles, T(T+sub)/2 when the tiles divide T (dense: T*T)."""
    tile = tile_size(seq_len)
    return sum((r1 - r0) * (c1 - c0) for r0, r1, c0, c1 in lower_pieces(seq_len, tile, sub_tile_size(tile)))


def resolve_impl(mixing: str, impl: str, seq_len: int) -> str:
    """The computation that runs: "dense", "blocked" or "fft" ("auto" picks by sequence length)."""
    if impl != "auto":
        return impl
    if mixing == "toeplitz" and seq_len >= FFT_MIN_SEQ:
        return "fft"
    return "blocked" if seq_len >= BLOCKED_MIN_SEQ else "dense"


def fft_length(seq_len: int) -> int:
    """FFT size for a linear (not circular) causal convolution of length T: >= 2T-1, a power of 2."""
    return 1 << (2 * seq_len - 1).bit_length() if seq_len > 1 else 2


def check_mixing(cfg) -> None:
    """The mixer's mixing options that do not combine (torch-free, at config load)."""
    from stackcore.config import ConfigError

    if cfg.mixing_impl == "fft" and cfg.mixing != "toeplitz":
        raise ConfigError('model.mixing_impl = "fft" needs model.mixing = "toeplitz" (a full n x n matrix has no '
                          'convolution form); use "auto", "dense" or "blocked"')
    if cfg.mixing == "toeplitz" and cfg.softmax:
        raise ConfigError('model.mixing = "toeplitz" with model.softmax = true: a row-normalised matrix is not '
                          "Toeplitz; set one of them back (mixing = \"full\" or softmax = false)")
    if cfg.mixing == "toeplitz" and getattr(cfg, "bidirectional", False):
        raise ConfigError('model.mixing = "toeplitz" with model.bidirectional = true: the reverse stream '
                          're-masks its matrices, which a Toeplitz mixing cannot take; use mixing = "full"')


def mixing_stages(cfg) -> list[tuple[int, int]]:
    """(out_blocks, in_blocks) of each masked stage of one head: expansion e is an e x k stage then a
    1 x e one; otherwise one 1 x k stage (k = kernel taps)."""
    k, e = cfg.kernel, cfg.expansion
    return [(e, k), (1, e)] if e > 0 else [(1, k)]


def fft_training_flops_per_column(seq_len: int, out_blocks: int, in_blocks: int) -> float:
    """Training (forward + backward) FLOPs of one FFT mixing stage per input column (one channel of
    one sequence). Convention: a real transform of length L costs 2.5 L log2 L (half the classic
    5 N log2 N of a complex one); a complex multiply(-add) costs 8. Executed (mixing_ops.FFTCausalConv):
    forward rfft of each input block, irfft of each output block; backward rfft of each output
    gradient, irfft of each input gradient; one product per block pair forward and two backward
    (dx, dW). The weights' own transforms are per call, not per token: left out (<1% at batch x
    channels >= 128)."""
    n_fft = fft_length(seq_len)
    real = 2.5 * n_fft * math.log2(n_fft)
    transforms = 2 * real * (in_blocks + out_blocks)
    products = 3 * 8 * out_blocks * in_blocks * (n_fft // 2 + 1)
    return transforms + products


def sequence_flops(cfg, t: int) -> float:
    """Forward FLOPs per token of one layer's token mixing as the configured computation executes it:
    dense counts the full T x T products, blocked the pieces it multiplies (`blocked_products`), fft
    one third of its training FLOPs (its backward is not 2x its forward: as many transforms, twice the
    products; 3 x this term = executed).
    A bidirectional reverse stream re-masks, so it always runs dense: its half counts dense."""
    d = cfg.d_model
    impl = resolve_impl(cfg.mixing, cfg.mixing_impl, t)
    dense = sum(2 * ob * ib * t * d for ob, ib in mixing_stages(cfg))
    if impl == "dense":
        return dense
    if impl == "fft":  # d columns per token over all heads; each stage's transforms per column
        return d / t * sum(fft_training_flops_per_column(t, ob, ib) for ob, ib in mixing_stages(cfg)) / 3
    blocked = dense * blocked_products(t) / (t * t)
    return (blocked + dense) / 2 if getattr(cfg, "bidirectional", False) else blocked


def mixing_params(cfg) -> int:
    """Mixing parameters of one layer: per head and stage, out x in blocks of n x n weights (full) or
    n per-distance weights (toeplitz), plus one bias per output block and position."""
    n = cfg.n_ctx
    per_block = n if cfg.mixing == "toeplitz" else n * n
    return cfg.heads * sum(ob * ib * per_block + ob * n for ob, ib in mixing_stages(cfg))


def fft_activation_values_delta(cfg, t: int) -> float:
    """Values one layer's FFT mixing saves for backward per sequence, minus what the matrix product
    saves (the mixer's base formula counts that: each stage's input [T] per column and its T x T
    matrices). FFTCausalConv keeps the transforms (L/2+1 complex values) of every input column and
    every weight block. 0 when the mixing is not by FFT."""
    if resolve_impl(cfg.mixing, cfg.mixing_impl, t) != "fft":
        return 0.0
    kept = 2 * (fft_length(t) // 2 + 1)
    delta = 0
    for ob, ib in mixing_stages(cfg):
        delta += ib * cfg.d_model * (kept - t) + cfg.heads * ob * ib * (kept - t * t)
    return float(delta)
