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

    token_bytes: torch.Tensor | None = None  # [vocab] UTF-8 bytes per id, set with the validation set

    def validation_set(self, manifest: dict[str, Any]):
        from pretrain.validation import token_byte_lengths
        val = super().validation_set(manifest)
        if val is not None:
            self.token_bytes = val.token_bytes = token_byte_lengths(manifest, self.cfg.model.vocab_size)
        return val

    def eval_sums(self, model, batch) -> dict[str, float]:
        inputs, labels = split_pairs(batch)
        logits = model(inputs).logits
        kept = labels != IGNORE_INDEX
        sums = {"nats": cross_entropy(logits, labels, reduction="sum").item(), "targets": int(kept.sum())}
        if self.token_bytes is not None:  # the UTF-8 bytes of exactly these targets
            if self.token_bytes.device != labels.device:
                self.token_bytes = self.token_bytes.to(labels.device)
            sums["bytes"] = int(self.token_bytes[labels[kept]].sum())
        return sums

    def sum_keys(self) -> list[str]:
        return ["nats", "targets", "bytes"]

    def metrics(self, sums: dict[str, float], val) -> dict[str, Any]:
        nats, targets = sums.get("nats", 0.0), int(sums.get("targets", 0))
        n_bytes = sums.get("bytes") or targets * (getattr(val, "bytes_per_token", None) or 0.0)
        return {"val_loss": nats / max(targets, 1), "val_tokens": targets,
                "val_bytes": int(n_bytes) if sums.get("bytes") else None, "val_bpb": bits_per_byte(nats, n_bytes)}
