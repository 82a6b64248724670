"""The mixer variants' validation and cost terms (torch-free; the modules are
pretrain/models/mixer_variants.py). The mixer's cost model (mixer_family.py) adds these terms; each is
0 for a config that does not use the variant, so the plain mixer's counts are untouched."""
from __future__ import annotations

from pretrain.models import mixing_rules
from stackcore.config import ConfigError

# The options this module adds to the mixer family.
VARIANT_OPTIONS = frozenset({"mixing_init", "row_sum_one", "distance_decay", "mixing_gate", "attention_layers",
                             "attention_heads"})


def _matrix_variants(cfg) -> list[str]:
    names = [f'mixing_init = "{cfg.mixing_init}"'] if cfg.mixing_init != "uniform" else []
    return names + [f"{k} = true" for k in ("row_sum_one", "distance_decay") if getattr(cfg, k)]


def check_variants(cfg) -> None:
    """Variant options that do not combine, or that are out of range (raises ConfigError)."""
    matrix = _matrix_variants(cfg)
    if matrix and cfg.mixing == "toeplitz":
        raise ConfigError(f'model.{matrix[0]} with model.mixing = "toeplitz": the variant changes the full '
                          f"n x n matrix (a Toeplitz one has a weight per distance already); use mixing = \"full\"")
    if (cfg.row_sum_one or cfg.distance_decay) and cfg.softmax:
        key = "row_sum_one" if cfg.row_sum_one else "distance_decay"
        raise ConfigError(f"model.{key} = true with model.softmax = true: the softmax already normalises the "
                          f"rows (a factor after it would undo that); set one of them back")
    if cfg.mixing_init == "running_mean" and cfg.expansion > 0:
        raise ConfigError('model.mixing_init = "running_mean" with model.expansion > 0: the expansion\'s '
                          "copies would start, and stay, identical; use expansion = 0 or mixing_init = \"uniform\"")
    used = matrix + (["mixing_gate = true"] if cfg.mixing_gate else []) + \
        ([f"attention_layers = {list(cfg.attention_layers)}"] if cfg.attention_layers else [])
    if used and getattr(cfg, "bidirectional", False):
        raise ConfigError(f"model.{used[0]} with model.bidirectional = true: the reverse stream re-masks plain "
                          "token mixings only; drop the variant or set bidirectional = false")
    if used and cfg.linear and (cfg.mixing_gate or cfg.attention_layers):
        raise ConfigError(f"model.{used[-1]} with model.linear = true: a gate or attention is not linear; "
                          "set linear = false")
    _check_attention_layers(cfg)


def _check_attention_layers(cfg) -> None:
    layers = list(cfg.attention_layers)
    bad = [i for i in layers if not 0 <= i < cfg.n_layers]
    if bad:
        raise ConfigError(f"model.attention_layers = {layers}: layer {bad[0]} is outside 0..{cfg.n_layers - 1} "
                          f"(model.n_layers = {cfg.n_layers})")
    if len(set(layers)) != len(layers):
        raise ConfigError(f"model.attention_layers = {layers} lists a layer twice")
    if layers and len(layers) == cfg.n_layers:
        raise ConfigError(f"model.attention_layers = {layers} makes every layer attention: that is a transformer, "
                          "not a hybrid; leave at least one mixer layer or use family = \"llama\"")
    if cfg.attention_heads < 1 or cfg.d_model % cfg.attention_heads or (cfg.d_model // cfg.attention_heads) % 2:
        raise ConfigError(f"model.attention_heads = {cfg.attention_heads}: d_model = {cfg.d_model} must split into "
                          "that many heads of an even size (RoPE rotates pairs)")


def check(cfg) -> None:
    """The mixer family's whole check: its mixing options, then the variants."""
    mixing_rules.check_mixing(cfg)
    check_variants(cfg)


# --- cost terms of one mixer layer (0 when unused) --------------------------------------------------

def gate_flops(cfg) -> float:
    return 2 * cfg.d_model * cfg.d_model if cfg.mixing_gate else 0


def gate_params(cfg) -> int:
    return cfg.d_model * cfg.d_model + cfg.d_model if cfg.mixing_gate else 0


def decay_params(cfg) -> int:
    """One factor per distance per head and stage."""
    return cfg.heads * len(mixing_rules.mixing_stages(cfg)) * cfg.n_ctx if cfg.distance_decay else 0


def variant_activation_values(cfg, t: int) -> float:
    """Values a mixer layer's variants save for backward per sequence, beyond the plain mixer's:
    the gate keeps its sigmoid output and the mixing output ([T, d] each); the decay keeps its
    T x T Toeplitz factor per head and stage (the product with W needs it)."""
    gate = 2 * t * cfg.d_model if cfg.mixing_gate else 0
    decay = cfg.heads * len(mixing_rules.mixing_stages(cfg)) * t * t if cfg.distance_decay else 0
    return gate + decay


# --- a hybrid's attention layer -----------------------------------------------------------------------

def attention_layer_flops(cfg, t: int) -> dict[str, float]:
    """Forward FLOPs per token of an attention layer (Llama's attention: QK^T and AV dense, q/k/v/out
    projections without biases) with the mixer block's FFN around it."""
    d = cfg.d_model
    return {"sequence": 4 * t * d, "projections": 8 * d * d}


def attention_layer_params(cfg) -> int:
    return 4 * cfg.d_model * cfg.d_model


def attention_activation_values(cfg, t: int) -> float:
    """What the attention saves per sequence on the default SDPA kernel (the saved-tensor hooks of
    tests/test_flops.py): eight [T, d] tensors (the qkv input, q and k before and after RoPE, v, the
    attention output and the out projection's input), the RoPE cos/sin tables [T, d/H] that q and k
    share, and the kernel's logsumexp [H, T]."""
    h = cfg.attention_heads
    # with one head the out projection's input is a view of the attention output: one tensor fewer
    tensors = 8 if h > 1 else 7
    return tensors * t * cfg.d_model + t * cfg.d_model // h + h * t
