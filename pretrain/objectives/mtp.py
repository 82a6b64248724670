"""mtp: multi-token prediction. The model (any registered family) is a trunk with `predict` = k heads;
head i predicts token t+1+i at position t, and the training loss is the sum of the k heads' losses.
The paper ran k forward passes (pass i on shift 1+i, losses summed); this is the shared-trunk form
(one trunk pass, k lm_heads), see `pretrain.models.multi_token`. Validation reports the NEXT-token loss
of head 0 as val_loss, so MTP runs sit beside plain runs in `eval compare`; the other heads' losses
are val_head{i}_loss.

    [objective]
    name = "mtp"
    predict = 4
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from pretrain.objectives import register
from pretrain.objectives.next_token import IGNORE_INDEX, NextToken, split_pairs
from stackcore.config import ConfigError


@dataclass
class MtpOptions:
    predict: int = 2  # tokens predicted per position: t+1 .. t+predict


@register
class MultiTokenPrediction(NextToken):
    """Validation is next-token's on head 0 (the model's `logits`), plus each extra head's loss."""

    name = "mtp"
    Options = MtpOptions

    def check(self) -> None:
        super().check()
        k, n_ctx = self.options.predict, self.cfg.model.n_ctx
        if not 1 <= k < n_ctx:
            raise ConfigError(f"objective.predict must be in [1, model.n_ctx) = [1, {n_ctx}), got {k}")
        if getattr(self.cfg.model, "bidirectional", False):
            raise ConfigError("objective 'mtp' with model.bidirectional = true: the bidirectional model reads "
                              "token t+2, which head 1 must predict; set model.bidirectional = false")

    def build_model(self) -> torch.nn.Module:
        from pretrain.models.multi_token import MultiTokenHeads
        from pretrain.models.wrapping import family_model
        return MultiTokenHeads(family_model(self.cfg.model, "objective 'mtp'"), self.options.predict)

    def init_targets(self, model: torch.nn.Module) -> list[torch.nn.Module]:
        """`--init.from` a causal run loads its trunk; the extra heads start fresh."""
        return [model.trunk]

    def flops_per_sample(self, model_cfg=None) -> float:
        from pretrain.models.objective_flops import multi_token_forward_flops, training
        model_cfg = model_cfg or self.cfg.model
        per_token = multi_token_forward_flops(model_cfg, self.options.predict, n_ctx=model_cfg.n_ctx)
        return training(per_token) * model_cfg.n_ctx

    def loss(self, model, batch) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, labels = split_pairs(batch)
        return model(inputs, labels=labels).loss, (labels != IGNORE_INDEX).sum()

    def eval_sums(self, model, batch) -> dict[str, float]:
        from pretrain.models.multi_token import shifted_labels
        sums = super().eval_sums(model, batch)  # head 0: the next-token loss and bytes
        inputs, labels = split_pairs(batch)
        out = model(inputs, labels=labels)
        for i in range(1, self.options.predict):
            count = int((shifted_labels(labels, i) != IGNORE_INDEX).sum())
            sums[f"head{i}_nats"] = out.head_losses[i].item() * count
            sums[f"head{i}_targets"] = count
        return sums

    def sum_keys(self) -> list[str]:
        return super().sum_keys() + [f"head{i}_{part}" for i in range(1, self.options.predict)
                                     for part in ("nats", "targets")]

    def metrics(self, sums: dict[str, float], val) -> dict[str, Any]:
        out = super().metrics(sums, val)
        for i in range(1, self.options.predict):
            out[f"val_head{i}_loss"] = sums.get(f"head{i}_nats", 0.0) / max(sums.get(f"head{i}_targets", 0), 1)
        return out
