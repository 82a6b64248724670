"""The one source of truth for FLOPs, parameter counts and memory of a model config.

Everything here needs only the `[model]` config (no built model, no torch import), so the Slurm
launcher, the sweep planner and the eval harness can use it cheaply. The per-family formulas live in
each family's cost model (`pretrain/models/<family>_family.py`, found through the registry); this
module sums them and adds the parts every family shares.

FLOP convention (used by training logs, MFU and eval):
- matmul FLOPs only (2 per multiply-add); norms, activations, softmax, masks and biases are free;
- embedding lookups are free; the lm_head counts;
- training = forward + backward = 3 x forward;
- token mixing and attention are counted as EXECUTED: a masked n x n mixing matrix computed as a
  full matmul (mixing_impl "dense") costs 2*T*d per token forward, attention 4*T*d (QK^T and AV);
  the mixer's "blocked" impl multiplies only the lower tiles (about (T+sub)/2T of that), its
  Toeplitz "fft" impl is counted by transform size (pretrain/models/mixing_rules.py). This executed
  count is what MFU uses. `useful=True` counts only the causal half of the dense mixing/attention
  (the entries the mask keeps), for comparing with papers that report it.
"""
from __future__ import annotations

from pretrain.models.registry import get_family


def _model_cfg(model_cfg):
    return getattr(model_cfg, "model", model_cfg)  # a RunConfig works too


def forward_flops_breakdown(model_cfg, n_ctx: int | None = None, useful: bool = False) -> dict:
    """Forward matmul FLOPs per token by part, summed over layers: "sequence" (token mixing or
    attention scores/values: the only n_ctx-dependent term), the family's other parts (the built-in
    families: "projections", "ffn"), and "lm_head"."""
    cfg = _model_cfg(model_cfg)
    cost = get_family(cfg.family).cost
    out = cost.stack_flops(cfg, n_ctx or cfg.n_ctx, useful)
    if getattr(cfg, "bidirectional", False):  # every layer runs two streams (pretrain/models/bidirectional.py)
        out = {part: 2 * flops for part, flops in out.items()}
    return {**out, "lm_head": cost.lm_head_flops(cfg)}


def forward_flops_per_token(model_cfg, n_ctx: int | None = None, useful: bool = False) -> float:
    return float(sum(forward_flops_breakdown(model_cfg, n_ctx, useful).values()))


def training_flops_per_token(model_cfg, n_ctx: int | None = None, useful: bool = False) -> float:
    """Forward + backward (3x forward) matmul FLOPs per token at sequence length n_ctx (default:
    the model's). Dense by default; `useful=True` counts only the causal half of mixing/attention."""
    return 3.0 * forward_flops_per_token(model_cfg, n_ctx, useful)


def param_counts(model_cfg) -> dict:
    """{'total', 'non_embedding', 'embedding'}: distinct parameters (a tied lm_head counts once);
    non_embedding excludes token/position embeddings and the (untied) lm_head."""
    cfg = _model_cfg(model_cfg)
    cost = get_family(cfg.family).cost
    embedding = cost.embedding_params(cfg)
    non_embedding = cost.stack_params(cfg) + cost.final_params(cfg)
    return {"total": non_embedding + embedding, "non_embedding": non_embedding, "embedding": embedding}


def activation_values_per_sequence(model_cfg, n_ctx: int | None = None) -> float:
    """Activation values saved for backward for one sequence (no activation checkpointing),
    including the logits' log-softmax, the lm_head input and the final norm / embedding sum."""
    cfg = _model_cfg(model_cfg)
    cost = get_family(cfg.family).cost
    t = n_ctx or cfg.n_ctx
    return cost.stack_activation_values(cfg, t) + cost.head_activation_values(cfg, t)


def memory_estimate(model_cfg, n_ctx: int | None = None, batch: int = 1,
                    precision: str = "fp32") -> dict:
    """Training memory in bytes: weights + grads + AdamW moments (fp32 master copies: 16 B/param;
    bf16 adds a 2 B/param compute copy), and activations for `batch` sequences (bf16 autocast
    halves them, roughly). The planner matches `total` at batch 1."""
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
    params = param_counts(model_cfg)["total"]
    state = params * (16 if precision == "fp32" else 18)
    act = activation_values_per_sequence(model_cfg, n_ctx) * (4 if precision == "fp32" else 2) * batch
    return {"params_and_optimizer": float(state), "activations": float(act), "total": float(state + act)}
