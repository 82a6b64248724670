"""Learning-rate multipliers (of train.lr) per optimizer step: linear warmup, then cosine / linear /
WSD (warmup-stable-decay) / constant, floored at train.min_lr_ratio."""
from __future__ import annotations

import math


def lr_multiplier(step: int, total: int, warmup: int, schedule: str, min_ratio: float = 0.0,
                  wsd_decay_fraction: float = 0.2) -> float:
    """Multiplier for the update of optimizer step `step` (0-based) of `total`."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    if schedule == "cosine":
        frac = 0.5 * (1.0 + math.cos(math.pi * progress))
    elif schedule == "linear":
        frac = 1.0 - progress
    elif schedule == "wsd":
        decay_start = 1.0 - wsd_decay_fraction
        frac = 1.0 if progress < decay_start else 1.0 - (progress - decay_start) / max(wsd_decay_fraction, 1e-12)
    else:
        raise ValueError(f"train.schedule: unknown schedule {schedule!r}; use cosine, linear, wsd or constant")
    return min_ratio + (1.0 - min_ratio) * max(0.0, frac)


def total_steps(train_cfg, tokens_per_step: int, flops_per_step: float) -> int:
    """Steps until the first of train.steps / budget_tokens / budget_flops is reached (0 = unused)."""
    limits = [train_cfg.steps] if train_cfg.steps > 0 else []
    if train_cfg.budget_tokens > 0:
        limits.append(math.ceil(train_cfg.budget_tokens / tokens_per_step))
    if train_cfg.budget_flops > 0:
        limits.append(math.ceil(train_cfg.budget_flops / flops_per_step))
    if not limits:
        raise ValueError("no budget: set train.steps, train.budget_tokens or train.budget_flops > 0")
    return min(limits)
