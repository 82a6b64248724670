"""Training-stability metrics of one loss curve (the flexibility sweep's third column).

- spike steps: steps whose loss exceeds `factor` (1.5) times the running minimum of the finite losses
  logged before it. A run that trains well never climbs back 50 % above its best; one that diverges
  does, at every step after the divergence (so the count also says how long it stayed up);
- spike events: maximal runs of consecutive spike steps (how often it blew up);
- non-finite steps: rows whose loss or grad norm is NaN/inf (they never enter the running minimum);
- max grad norm over the finite values.

Torch-free; reads plain lists, so synthetic curves test it and metrics.jsonl rows feed it.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable

SPIKE_FACTOR = 1.5


@dataclass
class Stability:
    steps: int  # rows with a training loss
    spike_steps: int
    spike_events: int
    first_spike_step: int | None
    nonfinite_steps: int
    max_grad_norm: float | None  # None when no row logged a finite grad norm
    min_loss: float | None

    @property
    def stable(self) -> bool:
        return self.spike_steps == 0 and self.nonfinite_steps == 0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "stable": self.stable}


def _finite(value: Any) -> bool:
    return value is not None and isinstance(value, (int, float)) and math.isfinite(value)


def _nonfinite(value: Any) -> bool:
    """NaN/inf, or the strings some writers use for them; None means 'not logged', not non-finite."""
    if isinstance(value, str):
        return value.lower() in ("nan", "inf", "-inf", "infinity", "-infinity")
    return isinstance(value, (int, float)) and not math.isfinite(value)


def spike_mask(losses: Iterable[float | None], factor: float = SPIKE_FACTOR) -> list[bool]:
    """True where a loss exceeds factor x the running minimum of the finite losses before it."""
    best = math.inf
    out = []
    for loss in losses:
        spike = _finite(loss) and best < math.inf and loss > factor * best
        out.append(bool(spike))
        if _finite(loss):
            best = min(best, loss)
    return out


def stability(losses: list[float | None], grad_norms: list[float | None] | None = None,
              steps: list[int] | None = None, factor: float = SPIKE_FACTOR) -> Stability:
    """Stability of one run from its per-step training losses (and grad norms, same length)."""
    grad_norms = grad_norms if grad_norms is not None else [None] * len(losses)
    if len(grad_norms) != len(losses):
        raise ValueError(f"{len(losses)} losses but {len(grad_norms)} grad norms; pass one per logged step")
    steps = steps if steps is not None else list(range(len(losses)))
    mask = spike_mask(losses, factor)
    events = sum(1 for i, m in enumerate(mask) if m and (i == 0 or not mask[i - 1]))
    first = next((steps[i] for i, m in enumerate(mask) if m), None)
    nonfinite = sum(1 for loss, g in zip(losses, grad_norms) if _nonfinite(loss) or _nonfinite(g))
    finite_g = [g for g in grad_norms if _finite(g)]
    finite_l = [x for x in losses if _finite(x)]
    return Stability(steps=sum(1 for x in losses if x is not None), spike_steps=sum(mask),
                     spike_events=events, first_spike_step=first, nonfinite_steps=nonfinite,
                     max_grad_norm=max(finite_g) if finite_g else None,
                     min_loss=min(finite_l) if finite_l else None)


def stability_of_rows(rows: list[dict[str, Any]], factor: float = SPIKE_FACTOR) -> Stability:
    """Stability from metrics.jsonl rows (keys step, train_loss, grad_norm, skipped_steps).

    The trainer skips a step whose loss is non-finite (no update), logs its train_loss as null and
    counts it in the cumulative `skipped_steps`: such rows count as non-finite steps. Rows without a
    training loss otherwise (evaluation-only rows) are ignored."""
    losses, grads, steps = [], [], []
    skipped_before = 0
    for i, r in enumerate(rows):
        skipped = r.get("skipped_steps")
        newly_skipped = isinstance(skipped, (int, float)) and skipped > skipped_before
        skipped_before = skipped if isinstance(skipped, (int, float)) else skipped_before
        loss = r.get("train_loss")
        if loss is None and (newly_skipped or r.get("nonfinite")):
            loss = math.nan
        if loss is None:
            continue
        losses.append(float(loss) if isinstance(loss, str) else loss)
        g = r.get("grad_norm")
        grads.append(float(g) if isinstance(g, str) and _nonfinite(g) else g)
        steps.append(int(r.get("step", i)))
    result = stability(losses, grads, steps, factor)
    # log.every > 1 hides skipped steps between rows: the trainer's counter is the floor
    result.nonfinite_steps = max(result.nonfinite_steps, int(skipped_before))
    return result
