"""autoencoder: a causal encoder reads the sequence, its last-position hidden state is repeated n_ctx
times as the decoder's only input, and a causal decoder reproduces the input (unshifted cross-entropy:
position t predicts token t). arXiv 2409.01482, "Autoencoders"; the model is
`pretrain.models.encoder_decoder.EncoderDecoder` built from any registered family.

    [objective]
    name = "autoencoder"
    encoder_layers = 4   # 0 = model.n_layers
    decoder_layers = 4   # 0 = model.n_layers

A batch is the loader's (input_ids, next-token labels); the targets are the input ids at the positions
that have a label (real tokens, not padding). Validation reports val_loss: nats per reproduced token.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from pretrain.objectives import register
from pretrain.objectives.next_token import NextToken, split_pairs
from stackcore.config import ConfigError


@dataclass
class EncoderDecoderOptions:
    encoder_layers: int = 0  # 0 = model.n_layers
    decoder_layers: int = 0  # 0 = model.n_layers


@register
class Autoencoder(NextToken):
    """Next-token's loss and validation (cross-entropy against pre-aligned labels, bits per byte of the
    targets) on batches whose labels are this objective's targets: `batch` swaps them in."""

    name = "autoencoder"
    Options = EncoderDecoderOptions
    bottleneck = "last_token"
    val_target = "input_tokens"  # recorded with val_loss: eval compare never mixes it with next-token losses

    def depths(self) -> tuple[int, int]:
        n_layers = self.cfg.model.n_layers
        return self.options.encoder_layers or n_layers, self.options.decoder_layers or n_layers

    def check(self) -> None:
        super().check()
        for key in ("encoder_layers", "decoder_layers"):
            if getattr(self.options, key) < 0:
                raise ConfigError(f"objective.{key} must be >= 0 (0 = model.n_layers), got "
                                  f"{getattr(self.options, key)}")
        if getattr(self.cfg.model, "bidirectional", False):
            raise ConfigError(f"objective {self.name!r} builds its own encoder and decoder: set "
                              "model.bidirectional = false")

    def build_model(self) -> torch.nn.Module:
        from pretrain.models.encoder_decoder import EncoderDecoder
        encoder_layers, decoder_layers = self.depths()
        return EncoderDecoder(self.cfg.model, encoder_layers, decoder_layers, self.bottleneck)

    def flops_per_sample(self, model_cfg=None) -> float:
        from pretrain.models.objective_flops import encoder_decoder_forward_flops, training
        model_cfg = model_cfg or self.cfg.model
        per_token = encoder_decoder_forward_flops(model_cfg, *self.depths(), n_ctx=model_cfg.n_ctx)
        return training(per_token) * model_cfg.n_ctx

    def targets(self, inputs: torch.Tensor, next_labels: torch.Tensor) -> torch.Tensor:
        from pretrain.models.encoder_decoder import autoencoder_labels
        return autoencoder_labels(inputs, next_labels)

    def batch(self, raw: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, next_labels = split_pairs(super().batch(raw, device))
        return inputs, self.targets(inputs, next_labels)

    def metrics(self, sums: dict[str, float], val) -> dict[str, Any]:
        return {**super().metrics(sums, val), "val_target": self.val_target}
