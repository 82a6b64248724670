"""The Llama family record: cost model and options. Torch-free; the model is pretrain/models/llama.py."""
from __future__ import annotations

from pretrain.models.registry import CostModel, Family
from stackcore.config import ConfigError


class LlamaCost(CostModel):
    def layer_flops(self, cfg, t: int) -> dict[str, float]:
        d = cfg.d_model
        return {"sequence": 4 * t * d,  # QK^T and AV, dense (what is_causal SDPA kernels are charged)
                "projections": 8 * d * d,  # q, k, v, out
                "ffn": 6 * cfg.ffn_mult * d * d}  # SwiGLU: gate, up, down

    def block_params(self, cfg) -> int:
        d, m = cfg.d_model, cfg.ffn_mult
        norm_gains = 2 * d if cfg.norm else 0  # model.norm = false removes both RMSNorms
        return 4 * d * d + 3 * m * d * d + norm_gains

    def final_params(self, cfg) -> int:
        return cfg.d_model if cfg.norm else 0

    def layer_activation_values(self, cfg, t: int) -> float:
        d, m = cfg.d_model, cfg.ffn_mult
        norms = 2 * (2 * t * d + t) if cfg.norm else 0  # each RMSNorm keeps its input, output and rstd
        return (4 * m + 9) * t * d + (cfg.heads * t) + norms

    def head_activation_values(self, cfg, t: int) -> float:
        final_norm = 2 * t * cfg.d_model + t if cfg.norm else 0
        return super().head_activation_values(cfg, t) + final_norm


def check_llama(cfg) -> None:
    if (cfg.d_model // cfg.heads) % 2:
        raise ConfigError(f"model.d_model / model.heads = {cfg.d_model // cfg.heads} must be even for "
                          f"llama's rotary embeddings; change model.d_model or model.heads")


LLAMA = Family(
    name="llama", model="pretrain.models.llama:Llama", cost=LlamaCost(), check=check_llama,
    options=frozenset({"norm", "residual", "rope_theta"}),
    refusals={"final_norm": "llama always ends in a final RMSNorm; model.norm = false removes it with the others",
              "dropout": "llama has no dropout"},
    description="Llama-style transformer: RMSNorm, RoPE, SwiGLU, causal SDPA, no biases")
