"""Which token-mixing computation runs, and its tile size: pure functions of the config (torch-free,
so the cost model, the Slurm launcher and the planner can use them without importing torch).

The thresholds are measured by `benchmarks/bench_mixing.py` (figures in docs/results/models.md).
"""
from __future__ import annotations

MIXINGS = ("full", "toeplitz")
MIXING_IMPLS = ("auto", "dense", "blocked", "fft")

# Below this sequence length the blocked product is not faster than the dense one (too few tiles
# to skip, and per-tile GEMMs too small): "auto" stays dense there.
BLOCKED_MIN_SEQ = 256
# Toeplitz by FFT beats the (blocked) matrix product from this sequence length on.
FFT_MIN_SEQ = 256


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
