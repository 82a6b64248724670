"""completion: one-step completion (arXiv 2409.01482). An encoder-decoder (the paper: 8 + 8 blocks)
whose encoder states for the second half of the sequence (positions >= n_ctx // 2) are zeroed; the
decoder predicts the second half's tokens at their own positions, so a text is completed in one
forward pass. The loss (and val_loss) is on the second half only.

    [objective]
    name = "completion"
    encoder_layers = 8   # 0 = model.n_layers
    decoder_layers = 8   # 0 = model.n_layers
"""
from __future__ import annotations

import torch

from pretrain.objectives import register
from pretrain.objectives.autoencoder import Autoencoder
from stackcore.config import ConfigError


@register
class Completion(Autoencoder):
    name = "completion"
    bottleneck = "first_half"
    val_target = "second_half_tokens"

    def check(self) -> None:
        super().check()
        if self.cfg.model.n_ctx < 2:
            raise ConfigError(f"objective 'completion' splits the sequence in two halves: model.n_ctx must be "
                              f">= 2, got {self.cfg.model.n_ctx}")

    def targets(self, inputs: torch.Tensor, next_labels: torch.Tensor) -> torch.Tensor:
        from pretrain.models.encoder_decoder import completion_labels
        return completion_labels(inputs, next_labels)
