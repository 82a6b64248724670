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
    """Time steps per tile: T/8 (8 row tiles skip 7/16 of the dense product), at least 64 so each
    per-tile GEMM stays big enough to run near the plain GEMM's rate."""
    return max(64, seq_len // 8)


def resolve_impl(mixing: str, impl: str, seq_len: int) -> str:
    """The computation that runs: "dense", "blocked" or "fft" ("auto" picks by sequence length)."""
    if impl != "auto":
        return impl
    if mixing == "toeplitz" and seq_len >= FFT_MIN_SEQ:
        return "fft"
    return "blocked" if seq_len >= BLOCKED_MIN_SEQ else "dense"
