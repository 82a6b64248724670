"""Non-finite losses: the step is skipped (its gradients are zeroed by tensor hooks before DeepSpeed
sees them, and the step runs at lr 0), counted, and after `max_nonfinite` in a row the run stops with a
clear error. Hooks cost nothing while inactive (they return None = keep the gradient)."""
from __future__ import annotations

import torch


class NonFiniteLossError(RuntimeError):
    pass


class NonFiniteGuard:
    def __init__(self, model: torch.nn.Module, max_in_a_row: int):
        self.active = False
        self.max_in_a_row = max_in_a_row
        self.streak = 0
        for p in model.parameters():
            if p.requires_grad:
                p.register_hook(self._hook)

    def _hook(self, grad: torch.Tensor):
        return torch.zeros_like(grad) if self.active else None

    def record(self, bad: bool, step: int) -> None:
        self.streak = self.streak + 1 if bad else 0
        if self.max_in_a_row and self.streak >= self.max_in_a_row:
            raise NonFiniteLossError(
                f"{self.streak} non-finite losses in a row (up to step {step}); lower train.lr, raise "
                "train.warmup, use train.precision fp32, or resume from an earlier checkpoint "
                f"(train.max_nonfinite={self.max_in_a_row})")
