"""The GPT-1 family record: cost model and options. Torch-free; the model is pretrain/models/gpt.py."""
from __future__ import annotations

from pretrain.models.registry import CostModel, Family


class GPTCost(CostModel):
    def layer_flops(self, cfg, t: int) -> dict[str, float]:
        d = cfg.d_model
        return {"sequence": 4 * t * d,  # QK^T and AV, dense
                "projections": 8 * d * d,  # qkv, out
                "ffn": 4 * cfg.ffn_mult * d * d}  # GELU MLP: up, down

    def block_params(self, cfg) -> int:
        d, m = cfg.d_model, cfg.ffn_mult
        # qkv + out with biases, GELU MLP with biases, two LayerNorms
        return 4 * d * d + 4 * d + 2 * m * d * d + m * d + d + 4 * d

    def final_params(self, cfg) -> int:
        return 0  # post-LN: the last block already ends in a LayerNorm

    def embedding_params(self, cfg) -> int:
        return super().embedding_params(cfg) + cfg.n_ctx * cfg.d_model  # learned positions

    def layer_activation_values(self, cfg, t: int) -> float:
        d, m = cfg.d_model, cfg.ffn_mult
        if cfg.dropout > 0:  # SDPA's math path keeps the attention probabilities and dropout masks
            return (2 * m + 12) * t * d + 3 * cfg.heads * t * t + 4 * t
        return (2 * m + 8) * t * d + (4 + cfg.heads) * t

    def head_activation_values(self, cfg, t: int) -> float:
        dropout_mask = t * cfg.d_model if cfg.dropout > 0 else 0  # embedding dropout
        return super().head_activation_values(cfg, t) + 2 * t + dropout_mask


GPT = Family(
    name="gpt", model="pretrain.models.gpt:GPT", cost=GPTCost(),
    options=frozenset({"dropout"}),
    refusals={"norm": "GPT-1's post-LayerNorm blocks always normalise",
              "residual": "GPT-1's blocks always add the residual",
              "final_norm": "post-LN: the last block already ends in a LayerNorm",
              "rope_theta": "gpt uses learned position embeddings"},
    description="GPT-1 'early transformer': learned positions, post-LayerNorm, GELU MLP, dropout")
