"""Matched-compute planner: the shapes of one family closest to a reference model by training
FLOPs/token, parameters or training memory.

    python -m eval match --reference configs/models/llama-512.toml --family mixer --by flops
    plan(reference_cfg, "mixer", "flops") -> [{"d_model", "n_layers", "heads", "value", "ratio", "config"}, ...]

Candidates: d_model in multiples of `width_step` (64 for a d512 reference) up to 4x the reference
width, 1..2x the reference depth, the given head counts. Ranking: |log ratio| plus a penalty (0.5 per octave) for changing the
depth, so an equal-depth shape wins unless another depth is clearly closer. Every other model field
(n_ctx, vocab, ffn_mult, tying) is copied from the reference; mixer options take their defaults.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys

from pretrain.config import ModelConfig, RunConfig
from pretrain.models.flops import memory_estimate, param_counts, training_flops_per_token
from pretrain.models.registry import family_names, get_family
from stackcore.config import ConfigError, load_config

BY = ("flops", "params", "memory")
DEPTH_PENALTY = 0.5  # per octave of depth change, in units of |log ratio|


def load_model_config(path: str, overrides: list[str] | None = None) -> ModelConfig:
    """A `[model]` config from a model or run TOML file (with `--model.key value` overrides)."""
    return load_config(RunConfig, path, overrides or []).model


def measure(cfg: ModelConfig, by: str, n_ctx: int | None = None, batch: int = 32) -> float:
    if by == "flops":
        return training_flops_per_token(cfg, n_ctx)
    if by == "params":
        return float(param_counts(cfg)["total"])
    if by == "memory":
        return memory_estimate(cfg, n_ctx, batch=batch)["total"]
    raise ConfigError(f"--by must be one of {list(BY)}, got {by!r}")


def width_step(d_model: int) -> int:
    """Candidate widths are multiples of this: d/8 rounded down to a power of two, at least 8
    (64 for d512), so tiny references get fine steps and large ones hardware-friendly widths."""
    return max(8, 2 ** int(math.log2(max(d_model // 8, 1))))


def default_heads(reference: ModelConfig, family: str) -> list[int]:
    """The family's own planner heads (the mixer: 1, the paper's flat mixer), else the reference's
    heads when the reference family has no fixed heads of its own, else 4."""
    fixed = get_family(family).planner_heads
    if fixed:
        return list(fixed)
    return [reference.heads] if not get_family(reference.family).planner_heads else [4]


def candidate(ref: ModelConfig, family: str, d: int, n_layers: int, heads: int, n_ctx: int,
              options: dict | None = None) -> ModelConfig | None:
    """A shape of `family` with the reference's other fields (and `options`: other [model] keys of the
    candidate, e.g. a mixer variant's), or None when the family refuses it (e.g. an odd rotary head
    dimension)."""
    try:
        cfg = ModelConfig(family=family, d_model=d, n_layers=n_layers, n_ctx=n_ctx, vocab_size=ref.vocab_size,
                          heads=heads, ffn_mult=ref.ffn_mult, tie_embeddings=ref.tie_embeddings)
        cfg = dataclasses.replace(cfg, **(options or {}))
    except TypeError as exc:  # an option that is no [model] key
        raise ConfigError(f"match options {sorted(options or {})}: {exc}") from None
    try:
        cfg.validate()
    except ConfigError:
        return None
    return cfg


def plan(reference_cfg, family: str, by: str, n_ctx: int | None = None, top: int = 5,
         heads: list[int] | None = None, batch: int = 32, options: dict | None = None,
         layers: list[int] | None = None) -> list[dict]:
    """The `top` shapes of `family` closest to `reference_cfg` (a ModelConfig, RunConfig or TOML
    path) by `by` at sequence length n_ctx (default: the reference's). `batch` sequences per device
    enter only the memory measure (activations scale with it). `options` are further [model] keys of
    every candidate (a variant's); `layers` restricts the depths searched (default 1..2x the reference)."""
    ref = load_model_config(reference_cfg) if isinstance(reference_cfg, str) else reference_cfg
    ref = getattr(ref, "model", ref)
    get_family(family)  # an unknown name raises, naming the closest registered family
    if by not in BY:
        raise ConfigError(f"by must be one of {list(BY)}, got {by!r}")
    t = n_ctx or ref.n_ctx
    base = dataclasses.replace(ref, n_ctx=t)
    target = measure(base, by, t, batch)
    rows = []
    step = width_step(ref.d_model)
    for n_layers in layers or range(1, 2 * ref.n_layers + 1):
        for d in range(step, 4 * ref.d_model + 1, step):
            for h in heads or default_heads(ref, family):
                cfg = candidate(ref, family, d, n_layers, h, t, options)
                if cfg is None:
                    continue
                value = measure(cfg, by, t, batch)
                score = abs(math.log(value / target)) + DEPTH_PENALTY * abs(math.log2(n_layers / ref.n_layers))
                rows.append({"family": family, "d_model": d, "n_layers": n_layers, "heads": h,
                             "value": value, "reference_value": target, "ratio": value / target,
                             "score": score, "config": cfg})
    rows.sort(key=lambda r: (r["score"], r["n_layers"], r["d_model"]))
    return rows[:top]


def _format(value: float, by: str) -> str:
    if by == "memory":
        return f"{value / 2**30:.2f} GiB"
    return f"{value:.4g}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval match", description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", required=True, help="model or run TOML of the reference")
    parser.add_argument("--family", required=True, choices=family_names())
    parser.add_argument("--by", default="flops", choices=list(BY))
    parser.add_argument("--n-ctx", type=int, default=None, help="sequence length (default: reference's)")
    parser.add_argument("--top", type=int, default=5)
    parser.add_argument("--heads", default=None, help="comma-separated head counts to consider")
    parser.add_argument("--batch", type=int, default=32, help="sequences per device (memory only)")
    parser.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    args = parser.parse_args(argv)
    try:
        heads = [int(h) for h in args.heads.split(",")] if args.heads else None
        ref = load_model_config(args.reference)
        rows = plan(ref, args.family, args.by, args.n_ctx, args.top, heads, args.batch)
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        for row in rows:
            print(json.dumps({k: v for k, v in row.items() if k != "config"}))
        return 0
    t = args.n_ctx or ref.n_ctx
    print(f"reference {args.reference}: {ref.family} d{ref.d_model} x{ref.n_layers} h{ref.heads} "
          f"at n_ctx {t}, {args.by} = {_format(measure(dataclasses.replace(ref, n_ctx=t), args.by, t, args.batch), args.by)}")
    print(f"{'family':<7}{'d_model':>8}{'layers':>8}{'heads':>7}{args.by:>14}{'ratio':>8}")
    for r in rows:
        print(f"{r['family']:<7}{r['d_model']:>8}{r['n_layers']:>8}{r['heads']:>7}"
              f"{_format(r['value'], args.by):>14}{r['ratio']:>8.3f}")
    return 0
