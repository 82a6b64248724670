"""Bidirectional models (`[model] bidirectional = true`): position t predicts token t+1 from every
token EXCEPT t+1 -- the past (<= t) and the far future (>= t+2). Built from a registered family model.

Mixer (`BidirectionalMixer`): each block runs two streams -- the forward stream with the family's
causal (lower-triangular) mixing, the reverse stream with its own mixing under `triu(diagonal=2)` (row
t reads tokens >= t+2) -- through the SAME feed-forward layers. The streams are summed only before
the lm_head: summed inside the blocks, position t+2's reverse state would carry t+1 (its causal past)
back to t one layer later (the leak the paper found).

Other families (`BidirectionalStacks`): a second, independent stack reads the flipped sequence; its
state at original position t has read tokens >= t, so shifting it by two (t reads the state of t+2)
gives tokens >= t+2. The shifted reverse states and the forward states are summed before the final
norm and the lm_head; the last two positions get no reverse input.
"""
from __future__ import annotations

import torch
from torch import nn

from pretrain.models.common import CausalLMOutput, next_token_loss
from pretrain.models.mixer import MaskedMatrix, MaskedMixer, TokenMixing
from pretrain.models.wrapping import family_model
from stackcore.config import ConfigError

REVERSE_OFFSET = 2  # the reverse stream starts at t+2: t+1 is the target


def _reverse_masks(mixing: TokenMixing, n_ctx: int) -> None:
    """Re-masks a causal TokenMixing for the reverse stream. The first masked stage reads only tokens
    >= t+2; a second (expansion) stage reads stage-one rows >= t, so the product still starts at t+2."""
    stages = [m for m in mixing.modules() if isinstance(m, MaskedMatrix)]
    for i, stage in enumerate(stages):
        if getattr(stage, "mixing", "full") != "full":  # e.g. Toeplitz: one weight per distance, no matrix
            raise ConfigError(f"model.bidirectional needs full n_ctx x n_ctx mixing matrices to re-mask, got "
                              f"{stage.mixing!r} mixing; use the default mixing or model.bidirectional = false")
        offset = REVERSE_OFFSET if i == 0 else 0
        stage.mask = torch.ones(n_ctx, n_ctx).triu(diagonal=offset).to(stage.mask)


def _residual(x: torch.Tensor, y: torch.Tensor, residual: bool) -> torch.Tensor:
    return x + y if residual else y


class BidirectionalMixer(nn.Module):
    """A masked mixer plus a reverse token mixing (and its LayerNorm) per block; the FFN is shared."""

    def __init__(self, model_cfg):
        super().__init__()
        if model_cfg.softmax:
            raise ConfigError("model.bidirectional with model.softmax: the reverse stream's last two rows "
                             "have no entry to normalise over; set model.softmax = false")
        self.cfg, self.n_ctx = model_cfg, model_cfg.n_ctx
        self.forward_model = family_model(model_cfg, "model.bidirectional")
        if not isinstance(self.forward_model, MaskedMixer):
            raise ConfigError(f"model.bidirectional: the mixer family built a {type(self.forward_model).__name__}, "
                              "not the MaskedMixer whose blocks the two-stream form reuses")
        self.reverse_mixing = nn.ModuleList(TokenMixing(model_cfg) for _ in range(model_cfg.n_layers))
        for mixing in self.reverse_mixing:
            _reverse_masks(mixing, model_cfg.n_ctx)
        first = self.forward_model.blocks[0]
        self.reverse_norms = nn.ModuleList(
            nn.LayerNorm(model_cfg.d_model) if first.mix_norm is not None else nn.Identity()
            for _ in range(model_cfg.n_layers))

    @property
    def embedding(self) -> nn.Embedding:
        return self.forward_model.embedding

    @property
    def lm_head(self) -> nn.Linear:
        return self.forward_model.lm_head

    @property
    def blocks(self) -> nn.ModuleList:
        return self.forward_model.blocks

    def hidden(self, input_ids: torch.Tensor) -> torch.Tensor:
        fwd = rev = self.forward_model.embed(input_ids)
        for block, mixing, norm in zip(self.forward_model.blocks, self.reverse_mixing, self.reverse_norms):
            fwd = block(fwd)
            rev = _residual(rev, mixing(norm(rev)), block.residual)
            ffn_in = block.ffn_norm(rev) if block.ffn_norm is not None else rev
            rev = _residual(rev, block.ffn(ffn_in), block.residual)
        return self.forward_model.final_norm(fwd + rev)

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None) -> CausalLMOutput:
        logits = self.forward_model.lm_head(self.hidden(input_ids))
        return CausalLMOutput(logits=logits, loss=next_token_loss(logits, labels) if labels is not None else None)


class BidirectionalStacks(nn.Module):
    """Two family models: one reads the sequence, the other the flipped sequence (its lm_head and final
    norm removed: the forward model's are used on the sum)."""

    def __init__(self, model_cfg):
        super().__init__()
        self.cfg, self.n_ctx = model_cfg, model_cfg.n_ctx
        self.forward_model = family_model(model_cfg, "model.bidirectional")
        self.reverse_model = family_model(model_cfg, "model.bidirectional")
        del self.reverse_model.lm_head
        self.reverse_model.final_norm = nn.Identity()

    @property
    def embedding(self) -> nn.Embedding:
        return self.forward_model.embedding

    @property
    def lm_head(self) -> nn.Linear:
        return self.forward_model.lm_head

    @property
    def blocks(self) -> list[nn.Module]:
        return [*self.forward_model.blocks, *self.reverse_model.blocks]

    def hidden(self, input_ids: torch.Tensor) -> torch.Tensor:
        fwd = self.forward_model.forward_blocks(self.forward_model.embed(input_ids))
        flipped = input_ids.flip(1)
        rev = self.reverse_model.forward_blocks(self.reverse_model.embed(flipped)).flip(1)
        # rev[:, t] has read tokens >= t; position t may use tokens >= t+2: shift left by two, zero-fill
        shifted = torch.cat([rev[:, REVERSE_OFFSET:], torch.zeros_like(rev[:, :REVERSE_OFFSET])], dim=1)
        return self.forward_model.final_norm(fwd + shifted)

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None) -> CausalLMOutput:
        logits = self.forward_model.lm_head(self.hidden(input_ids))
        return CausalLMOutput(logits=logits, loss=next_token_loss(logits, labels) if labels is not None else None)


def build_bidirectional(model_cfg) -> nn.Module:
    """The mixer gets the shared-FFN two-stream form; every other family the flipped second stack."""
    if model_cfg.family == "mixer":
        return BidirectionalMixer(model_cfg)
    return BidirectionalStacks(model_cfg)
