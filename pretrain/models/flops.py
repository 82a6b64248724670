"""The one source of truth for FLOPs, parameter counts and memory of a model config.

Everything here needs only the `[model]` config (no built model, no torch import), so the Slurm
launcher, the sweep planner and the eval harness can use it cheaply.

FLOP convention (used by training logs, MFU and eval):
- matmul FLOPs only (2 per multiply-add); norms, activations, softmax, masks and biases are free;
- embedding lookups are free; the lm_head counts;
- training = forward + backward = 3 x forward;
- token mixing and attention are counted DENSELY: a masked n x n mixing matrix costs 2*T*d per
  token forward (it is computed as a full matmul), attention 4*T*d (QK^T and AV). This dense count
  is what the hardware executes and what MFU uses. `useful=True` counts only the causal half of
  mixing/attention (the entries the mask keeps), for comparing with papers that report it.
"""
from __future__ import annotations


def forward_flops_breakdown(model_cfg, n_ctx: int | None = None, useful: bool = False) -> dict:
    """Forward matmul FLOPs per token by part, summed over layers: "sequence" (token mixing or
    attention scores/values: the only n_ctx-dependent term), "projections" (mixer head in/out or
    attention q/k/v/o), "ffn", "lm_head"."""
    cfg = getattr(model_cfg, "model", model_cfg)
    t, d, m, n_layers = n_ctx or cfg.n_ctx, cfg.d_model, cfg.ffn_mult, cfg.n_layers
    if cfg.family == "mixer":
        k, e = cfg.kernel, cfg.expansion
        # expansion: an e*T x k*T stage then a T x e*T stage; else one T x k*T matrix
        sequence = 2 * e * t * d * (k + 1) if e > 0 else 2 * k * t * d
        projections = 4 * d * d if cfg.heads > 1 else 0
        ffn = 2 * d * d if cfg.linear else 4 * m * d * d
    else:
        sequence = 4 * t * d  # QK^T and AV, dense (what is_causal SDPA kernels are charged)
        projections = 8 * d * d
        ffn = 6 * m * d * d if cfg.family == "llama" else 4 * m * d * d
    return {"sequence": n_layers * sequence * (0.5 if useful else 1.0),
            "projections": n_layers * projections, "ffn": n_layers * ffn,
            "lm_head": 2 * d * cfg.vocab_size}


def forward_flops_per_token(model_cfg, n_ctx: int | None = None, useful: bool = False) -> float:
    return float(sum(forward_flops_breakdown(model_cfg, n_ctx, useful).values()))


def training_flops_per_token(model_cfg, n_ctx: int | None = None, useful: bool = False) -> float:
    """Forward + backward (3x forward) matmul FLOPs per token at sequence length n_ctx (default:
    the model's). Dense by default; `useful=True` counts only the causal half of mixing/attention."""
    return 3.0 * forward_flops_per_token(model_cfg, n_ctx, useful)


def _block_params(cfg) -> int:
    d, m, n = cfg.d_model, cfg.ffn_mult, cfg.n_ctx
    if cfg.family == "mixer":
        h, k, e = cfg.heads, cfg.kernel, cfg.expansion
        if e > 0:  # expand: e x k blocks, bias e*n; contract: 1 x e blocks, bias n (per head)
            mixing = h * (e * k * n * n + e * n + e * n * n + n)
        else:
            mixing = h * (k * n * n + n)
        heads_proj = 2 * (d * d + d) if h > 1 else 0
        ffn = d * d + d if cfg.linear else 2 * m * d * d + m * d + d
        norms = 4 * d if cfg.norm and not cfg.linear else 0
        return mixing + heads_proj + ffn + norms
    if cfg.family == "llama":
        return 4 * d * d + 3 * m * d * d + 2 * d
    # gpt: qkv + out with biases, GELU MLP with biases, two LayerNorms
    return 4 * d * d + 4 * d + 2 * m * d * d + m * d + d + 4 * d


def param_counts(model_cfg) -> dict:
    """{'total', 'non_embedding', 'embedding'}: distinct parameters (a tied lm_head counts once);
    non_embedding excludes token/position embeddings and the (untied) lm_head."""
    cfg = getattr(model_cfg, "model", model_cfg)
    d, v = cfg.d_model, cfg.vocab_size
    embedding = v * d + (0 if cfg.tie_embeddings else v * d)
    if cfg.family == "gpt":
        embedding += cfg.n_ctx * d
    final = 0
    if cfg.family == "mixer" and cfg.final_norm and not cfg.linear:
        final = 2 * d
    elif cfg.family == "llama":
        final = d
    non_embedding = cfg.n_layers * _block_params(cfg) + final
    return {"total": non_embedding + embedding, "non_embedding": non_embedding, "embedding": embedding}


def _mixer_matrices(cfg) -> int:
    """Masked n x n matrices per mixer layer (all heads, both expansion stages, all kernel taps)."""
    k, e = cfg.kernel, cfg.expansion
    return cfg.heads * (e * k + e if e > 0 else k)


def _layer_activation_values(cfg, t: int) -> float:
    """Values one block saves for backward, per sequence of length t (fp32 eager autograd, as
    measured with `torch.autograd.graph.saved_tensors_hooks`; tests keep this exact)."""
    d, m = cfg.d_model, cfg.ffn_mult
    if cfg.family == "mixer":
        k, e = cfg.kernel, cfg.expansion
        norm = cfg.norm and not cfg.linear
        per_td = k + (2 if cfg.heads > 1 else 0) + (e if cfg.linear else 2 * e)
        per_td += 1 if cfg.linear else 1 + 2 * m  # FFN input (+ hidden before/after GELU)
        per_td += 2 if norm else 0                # LayerNorm inputs
        matrices = _mixer_matrices(cfg)
        if cfg.softmax:  # masked_fill keeps one bool T x T mask per masked-matrix module
            matrices += 0.25 * (2 if e > 0 else 1)
        return per_td * t * d + matrices * t * t + (4 * t if norm else 0)
    if cfg.family == "llama":
        return (4 * m + 13) * t * d + (2 + cfg.heads) * t
    if cfg.dropout > 0:  # SDPA's math path keeps the attention probabilities and dropout masks
        return (2 * m + 12) * t * d + 3 * cfg.heads * t * t + 4 * t
    return (2 * m + 8) * t * d + (4 + cfg.heads) * t


def activation_values_per_sequence(model_cfg, n_ctx: int | None = None) -> float:
    """Activation values saved for backward for one sequence (no activation checkpointing),
    including the logits' log-softmax, the lm_head input and the final norm / embedding sum."""
    cfg = getattr(model_cfg, "model", model_cfg)
    t, d = n_ctx or cfg.n_ctx, cfg.d_model
    head = t * cfg.vocab_size + t * d + 2 * t + 1  # log-softmax, lm_head input, int64 ids/labels
    if cfg.family == "llama":
        head += 2 * t * d + t  # final RMSNorm
    elif cfg.family == "gpt":
        head += 2 * t + (t * d if cfg.dropout > 0 else 0)  # embedding-dropout mask
    elif cfg.final_norm and not cfg.linear:
        head += t * d + 2 * t  # final LayerNorm
    return cfg.n_layers * _layer_activation_values(cfg, t) + head


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
