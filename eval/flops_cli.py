"""`python -m eval flops --config FILE [--n-ctx T] [--model.key value ...]`: parameters, training
FLOPs per token (as executed, the MFU/eval axis, and the causal "useful" half), FLOPs per optimizer step
and the memory estimate of a model or run config. All numbers come from pretrain.models.flops."""
from __future__ import annotations

import argparse
import json
import sys

from pretrain.config import RunConfig
from pretrain.models.flops import (activation_values_per_sequence, forward_flops_breakdown,
                                   memory_estimate, param_counts, training_flops_per_token)
from stackcore.config import ConfigError, load_config


def report(cfg: RunConfig, n_ctx: int | None = None) -> dict:
    """Every figure the CLI prints, as a dict (also used by other tools)."""
    model = cfg.model
    t = n_ctx or model.n_ctx
    counts = param_counts(model)
    dense = training_flops_per_token(model, t)
    tokens_per_step = cfg.train.global_batch * t
    memory = memory_estimate(model, t, batch=cfg.train.micro_batch, precision=cfg.train.precision)
    return {
        "family": model.family, "n_ctx": t,
        "params_total": counts["total"], "params_non_embedding": counts["non_embedding"],
        "train_flops_per_token": dense,
        "train_flops_per_token_useful": training_flops_per_token(model, t, useful=True),
        "train_flops_per_token_by_part": {k: 3 * v for k, v in forward_flops_breakdown(model, t).items()},
        "tokens_per_step": tokens_per_step, "train_flops_per_step": dense * tokens_per_step,
        "activation_bytes_per_sequence": activation_values_per_sequence(model, t)
        * (4 if cfg.train.precision == "fp32" else 2),
        "memory_micro_batch": cfg.train.micro_batch,
        "memory_params_and_optimizer_bytes": memory["params_and_optimizer"],
        "memory_activations_bytes": memory["activations"],
        "memory_total_bytes": memory["total"],
    }


def _human(n: float, unit: str = "") -> str:
    for scale, suffix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.3f} {suffix}{unit}"
    return f"{n:.0f} {unit}".rstrip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval flops", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="a model (configs/models/*.toml) or run config")
    parser.add_argument("--n-ctx", type=int, default=None, help="sequence length (default: model.n_ctx)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args, overrides = parser.parse_known_args(argv)
    try:
        cfg = load_config(RunConfig, args.config, overrides)
        rep = report(cfg, args.n_ctx)
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(rep))
        return 0
    m = cfg.model
    gib = 2 ** 30
    print(f"{args.config}: {m.family} d{m.d_model} x{m.n_layers} heads {m.heads}, vocab {m.vocab_size}, "
          f"n_ctx {rep['n_ctx']}")
    print(f"  params              {rep['params_total']:>14,} total, {rep['params_non_embedding']:,} non-embedding")
    print(f"  train FLOPs/token   {_human(rep['train_flops_per_token'], 'FLOP'):>14} executed (MFU axis); "
          f"{_human(rep['train_flops_per_token_useful'], 'FLOP')} causal-useful")
    parts = rep["train_flops_per_token_by_part"]
    print("  by part             " + ", ".join(
        f"{name} {100 * v / rep['train_flops_per_token']:.1f}%" for name, v in parts.items()))
    print(f"  train FLOPs/step    {_human(rep['train_flops_per_step'], 'FLOP'):>14} "
          f"({rep['tokens_per_step']:,} tokens = global_batch {cfg.train.global_batch} x n_ctx)")
    print(f"  activations/seq     {rep['activation_bytes_per_sequence'] / gib:>10.3f} GiB ({cfg.train.precision})")
    print(f"  training memory     {rep['memory_total_bytes'] / gib:>10.3f} GiB at micro_batch "
          f"{rep['memory_micro_batch']} ({rep['memory_params_and_optimizer_bytes'] / gib:.3f} GiB weights+grads+AdamW, "
          f"{rep['memory_activations_bytes'] / gib:.3f} GiB activations)")
    return 0
