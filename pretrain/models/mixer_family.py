"""The masked mixer's family record: its cost model (FLOPs, parameters, saved activations per term)
and the options it implements. Torch-free; the model itself is pretrain/models/mixer.py.

One method per term, so a new mixing option (an implementation, a structured matrix) changes the
terms it affects and nothing else."""
from __future__ import annotations

from pretrain.models import mixer_variant_rules as variants
from pretrain.models import mixing_rules
from pretrain.models.registry import CostModel, Family


class MixerCost(CostModel):
    # --- forward FLOPs per token, one block ---------------------------------------------------
    def sequence_flops(self, cfg, t: int) -> float:
        """Masked mixing as the configured computation executes it (dense, blocked or FFT; see
        mixing_rules.sequence_flops): expansion is an e*T x k*T stage then a T x e*T stage; else one
        T x k*T matrix."""
        return mixing_rules.sequence_flops(cfg, t)

    def useful_sequence_flops(self, cfg, t: int) -> float:
        """The causal half of the dense count, whatever runs (what papers report)."""
        k, e, d = cfg.kernel, cfg.expansion, cfg.d_model
        return 0.5 * (2 * e * t * d * (k + 1) if e > 0 else 2 * k * t * d)

    def projection_flops(self, cfg) -> float:
        heads = 4 * cfg.d_model * cfg.d_model if cfg.heads > 1 else 0  # head_in, head_out
        return heads + variants.gate_flops(cfg)

    def ffn_flops(self, cfg) -> float:
        d = cfg.d_model
        return 2 * d * d if cfg.linear else 4 * cfg.ffn_mult * d * d

    def layer_flops(self, cfg, t: int) -> dict[str, float]:
        return {"sequence": self.sequence_flops(cfg, t), "projections": self.projection_flops(cfg),
                "ffn": self.ffn_flops(cfg)}

    # --- parameters ---------------------------------------------------------------------------
    def mixing_params(self, cfg) -> int:
        """Per head: expand = e x k blocks of n x n plus e*n biases, contract = 1 x e blocks plus n;
        without expansion one 1 x k stack plus n biases. Toeplitz blocks hold n weights, not n^2."""
        return mixing_rules.mixing_params(cfg) + variants.decay_params(cfg)

    def projection_params(self, cfg) -> int:
        d = cfg.d_model
        return (2 * (d * d + d) if cfg.heads > 1 else 0) + variants.gate_params(cfg)

    def ffn_params(self, cfg) -> int:
        d, m = cfg.d_model, cfg.ffn_mult
        return d * d + d if cfg.linear else 2 * m * d * d + m * d + d

    def uses_norms(self, cfg) -> bool:
        return cfg.norm and not cfg.linear

    def norm_params(self, cfg) -> int:
        return 4 * cfg.d_model if self.uses_norms(cfg) else 0  # two LayerNorms, weight + bias

    def block_params(self, cfg) -> int:
        return self.mixing_params(cfg) + self.projection_params(cfg) + self.ffn_params(cfg) + self.norm_params(cfg)

    def final_params(self, cfg) -> int:
        return 2 * cfg.d_model if cfg.final_norm and not cfg.linear else 0

    # --- activations saved for backward (fp32 eager; tests keep these exact) -------------------
    def mixing_matrices(self, cfg) -> int:
        """Masked n x n matrices per layer (all heads, both expansion stages, all kernel taps)."""
        k, e = cfg.kernel, cfg.expansion
        return cfg.heads * (e * k + e if e > 0 else k)

    def layer_activation_values(self, cfg, t: int) -> float:
        k, e, m, d = cfg.kernel, cfg.expansion, cfg.ffn_mult, cfg.d_model
        norm = self.uses_norms(cfg)
        per_td = k + (2 if cfg.heads > 1 else 0) + (e if cfg.linear else 2 * e)
        per_td += 1 if cfg.linear else 1 + 2 * m  # FFN input (+ hidden before/after GELU)
        per_td += 2 if norm else 0                # LayerNorm inputs
        matrices = self.mixing_matrices(cfg)
        if cfg.softmax:  # masked_fill keeps one bool T x T mask per masked-matrix module
            matrices += 0.25 * (2 if e > 0 else 1)
        fft = mixing_rules.fft_activation_values_delta(cfg, t)  # 0 unless Toeplitz mixing runs by FFT
        extra = variants.variant_activation_values(cfg, t)  # 0 without gate / decay
        return per_td * t * d + matrices * t * t + (4 * t if norm else 0) + fft + extra

    def ffn_and_norm_activation_values(self, cfg, t: int) -> float:
        """The part of a block's saved values outside its sequence mixing (FFN, LayerNorms)."""
        norm = self.uses_norms(cfg)
        per_td = (1 if cfg.linear else 1 + 2 * cfg.ffn_mult) + (2 if norm else 0)
        return per_td * t * cfg.d_model + (4 * t if norm else 0)

    # --- the stack: a hybrid's attention layers replace the mixing of some blocks ----------------
    def stack_flops(self, cfg, t: int, useful: bool = False) -> dict[str, float]:
        out = super().stack_flops(cfg, t, useful)
        n_attention = len(cfg.attention_layers)
        if not n_attention:
            return out
        mixer_layer, attention = self.layer_flops(cfg, t), variants.attention_layer_flops(cfg, t)
        if useful:
            mixer_layer["sequence"] = self.useful_sequence_flops(cfg, t)
            attention["sequence"] *= 0.5
        n_mixer = cfg.n_layers - n_attention
        return {"sequence": n_mixer * mixer_layer["sequence"] + n_attention * attention["sequence"],
                "projections": n_mixer * mixer_layer["projections"] + n_attention * attention["projections"],
                "ffn": cfg.n_layers * mixer_layer["ffn"]}

    def stack_params(self, cfg) -> int:
        n_attention = len(cfg.attention_layers)
        attention = variants.attention_layer_params(cfg) + self.ffn_params(cfg) + self.norm_params(cfg)
        return (cfg.n_layers - n_attention) * self.block_params(cfg) + n_attention * attention

    def stack_activation_values(self, cfg, t: int) -> float:
        n_attention = len(cfg.attention_layers)
        attention = variants.attention_activation_values(cfg, t) + self.ffn_and_norm_activation_values(cfg, t)
        return (cfg.n_layers - n_attention) * self.layer_activation_values(cfg, t) + n_attention * attention

    def head_activation_values(self, cfg, t: int) -> float:
        head = super().head_activation_values(cfg, t)
        return head + (t * cfg.d_model + 2 * t if cfg.final_norm and not cfg.linear else 0)  # final LN


MIXER = Family(
    name="mixer", model="pretrain.models.mixer:MaskedMixer", cost=MixerCost(),
    options=frozenset({"expansion", "kernel", "softmax", "norm", "residual", "linear", "final_norm", "mixing",
                       "mixing_impl"}) | variants.VARIANT_OPTIONS,
    check=variants.check,
    refusals={"dropout": "the mixer has no dropout", "rope_theta": "the mixer has no positional encoding"},
    planner_heads=(1,),  # the paper's flat mixer
    description="masked mixer (arXiv 2409.01482): learned causal n_ctx x n_ctx token mixing")
