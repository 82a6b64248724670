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
from pretrain.objectives.base import Objective, bits_per_byte
from pretrain.objectives.next_token import IGNORE_INDEX, cross_entropy, split_pairs
from stackcore.config import ConfigError


@dataclass
class EncoderDecoderOptions:
    encoder_layers: int = 0  # 0 = model.n_layers
    decoder_layers: int = 0  # 0 = model.n_layers


@register
class Autoencoder(Objective):
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

    def loss(self, model, batch) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, next_labels = split_pairs(batch)
        labels = self.targets(inputs, next_labels)
        return cross_entropy(model(inputs).logits, labels), (labels != IGNORE_INDEX).sum()

    def eval_sums(self, model, batch) -> dict[str, float]:
        inputs, next_labels = split_pairs(batch)
        labels = self.targets(inputs, next_labels)
        return {"nats": cross_entropy(model(inputs).logits, labels, reduction="sum").item(),
                "targets": int((labels != IGNORE_INDEX).sum())}

    def sum_keys(self) -> list[str]:
        return ["nats", "targets"]

    def metrics(self, sums: dict[str, float], val) -> dict[str, Any]:
        nats, targets = sums.get("nats", 0.0), int(sums.get("targets", 0))
        return {"val_loss": nats / max(targets, 1), "val_tokens": targets, "val_target": self.val_target,
                "val_bpb": bits_per_byte(nats, targets, getattr(val, "bytes_per_token", None))}
