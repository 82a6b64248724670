"""Encoder-decoder wrappers built from two registered-family models: the autoencoder and one-step
completion of arXiv 2409.01482 (section "Autoencoder" / "One-step completion" of the reference).

Both read the input with a causal *encoder* (a family model of `encoder_layers` blocks, its lm_head
and final norm removed) and produce logits with a causal *decoder* (the same family, `decoder_layers`
blocks, its token embedding removed: it never reads tokens). What differs is the bottleneck between
them -- the only path from the input to the decoder:

  autoencoder  the encoder's last-position hidden state, repeated n_ctx times; the decoder reproduces
               the whole input (unshifted targets: position t predicts token t).
  completion   every encoder state, with the second half (positions >= T // 2) zeroed; the decoder
               predicts the second half's tokens at their own positions (one forward pass).

Families with learned positions (GPT) add the decoder's position embedding to its input: a repeated
vector carries no position, and a causal stack over identical inputs gives identical outputs.
RoPE (Llama) and the mixer's position-aware matrices need nothing.
"""
from __future__ import annotations

import torch
from torch import nn

from pretrain.models.common import IGNORE_INDEX, CausalLMOutput, next_token_loss
from pretrain.models.wrapping import family_model

BOTTLENECKS = ("last_token", "first_half")


class EncoderDecoder(nn.Module):
    """`model(input_ids, labels)` like every model; labels are the objective's (already aligned)."""

    def __init__(self, model_cfg, encoder_layers: int, decoder_layers: int, bottleneck: str):
        super().__init__()
        if bottleneck not in BOTTLENECKS:
            raise ValueError(f"bottleneck must be one of {BOTTLENECKS}, got {bottleneck!r}")
        self.cfg, self.n_ctx, self.bottleneck = model_cfg, model_cfg.n_ctx, bottleneck
        purpose = "an encoder-decoder (objective 'autoencoder' / 'completion')"
        self.encoder = family_model(model_cfg, purpose, n_layers=encoder_layers)
        self.decoder = family_model(model_cfg, purpose, n_layers=decoder_layers)
        # Parts that would get no gradient (DeepSpeed/ZeRO dislike unused parameters). A tied lm_head
        # keeps the decoder's embedding matrix through the lm_head itself.
        del self.encoder.lm_head
        self.encoder.final_norm = nn.Identity()
        del self.decoder.embedding

    # the interface the trainer, activation checkpointing and layer statistics rely on
    @property
    def embedding(self) -> nn.Embedding:
        return self.encoder.embedding

    @property
    def lm_head(self) -> nn.Linear:
        return self.decoder.lm_head

    @property
    def blocks(self) -> list[nn.Module]:
        return [*self.encoder.blocks, *self.decoder.blocks]

    def encode(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Encoder hidden states [B, T, d] (causal: position t has read tokens 0..t)."""
        return self.encoder.forward_blocks(self.encoder.embed(input_ids))

    def decoder_input(self, states: torch.Tensor) -> torch.Tensor:
        """The bottleneck: what of the encoder states the decoder may see."""
        t = states.size(1)
        if self.bottleneck == "last_token":
            return states[:, -1:].expand(-1, t, -1)
        keep = (torch.arange(t, device=states.device) < t // 2).to(states.dtype)
        return states * keep[None, :, None]

    def decode(self, vectors: torch.Tensor) -> torch.Tensor:
        """Decoder logits [B, T, V] from its input vectors [B, T, d]."""
        positions = getattr(self.decoder, "position_embedding", None)
        if positions is not None:
            vectors = vectors + positions(torch.arange(vectors.size(1), device=vectors.device))
        hidden = self.decoder.final_norm(self.decoder.forward_blocks(vectors))
        return self.decoder.lm_head(hidden)

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None) -> CausalLMOutput:
        logits = self.decode(self.decoder_input(self.encode(input_ids)))
        loss = next_token_loss(logits, labels) if labels is not None else None
        return CausalLMOutput(logits=logits, loss=loss)


def autoencoder_labels(input_ids: torch.Tensor, next_labels: torch.Tensor) -> torch.Tensor:
    """Unshifted targets: position t reproduces its own token. A position is real exactly when the
    loader gave it a next-token label (padding has -100), so the pads stay ignored."""
    return torch.where(next_labels != IGNORE_INDEX, input_ids, torch.full_like(input_ids, IGNORE_INDEX))


def completion_labels(input_ids: torch.Tensor, next_labels: torch.Tensor) -> torch.Tensor:
    """The autoencoder's targets on the second half (positions >= T // 2) only."""
    labels = autoencoder_labels(input_ids, next_labels)
    labels[:, : input_ids.size(1) // 2] = IGNORE_INDEX
    return labels
