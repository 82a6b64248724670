"""next_token: causal language modelling, the stack's pretraining objective (and the default).

A batch is (input_ids [B, T], labels [B, T]) with labels ALREADY aligned (labels[b, t] is the target of
position t, -100 = ignored; the loader shifts, nobody else does). The loss is the mean fp32 cross-entropy
over the non-ignored targets; validation reports val_loss (nats per target token) and val_bpb."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from pretrain.objectives import register
from pretrain.objectives.base import Objective, bits_per_byte

IGNORE_INDEX = -100


def split_pairs(batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, labels) from a loader tuple or a [B, 2, T] validation tensor."""
    if isinstance(batch, torch.Tensor):
        return batch[:, 0], batch[:, 1]
    return batch[0], batch[1]


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy over the non-ignored positions, in fp32 even under bf16: a 50k-way log-softmax in
    bf16 loses the small differences between runs the comparisons are about."""
    if labels.shape != logits.shape[:-1]:
        raise ValueError(f"labels shape {tuple(labels.shape)} must equal input_ids shape "
                         f"{tuple(logits.shape[:-1])} (labels are pre-aligned, one per position)")
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), labels.reshape(-1),
                           ignore_index=IGNORE_INDEX, reduction=reduction)


@register
class NextToken(Objective):
    name = "next_token"

    def loss(self, model, batch) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, labels = split_pairs(batch)
        logits = model(inputs).logits
        # the target count stays a tensor: reading it here would cost a host sync per micro-step
        return cross_entropy(logits, labels), (labels != IGNORE_INDEX).sum()

    def eval_sums(self, model, batch) -> dict[str, float]:
        inputs, labels = split_pairs(batch)
        logits = model(inputs).logits
        return {"nats": cross_entropy(logits, labels, reduction="sum").item(),
                "targets": int((labels != IGNORE_INDEX).sum())}

    def sum_keys(self) -> list[str]:
        return ["nats", "targets"]

    def metrics(self, sums: dict[str, float], val) -> dict[str, Any]:
        nats, targets = sums.get("nats", 0.0), int(sums.get("targets", 0))
        return {"val_loss": nats / max(targets, 1), "val_tokens": targets,
                "val_bpb": bits_per_byte(nats, targets, getattr(val, "bytes_per_token", None))}
