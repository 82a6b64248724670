"""The comparison table: for each pair of configurations with the same n_ctx (and, checked before, the
same validation data), loss at the largest budget both reached and the compute multiplier, with
seed spread. Pure numpy on `Run` objects; `eval.compare` formats it."""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from eval.curves import compute_multiplier, geo_mean_spread, matched_budget, mean_spread, value_at
from eval.runs import Run


@dataclass
class Config:
    """The seeds of one configuration."""
    arch: str
    family: str
    n_ctx: int
    runs: list[Run] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.arch} ({len(self.runs)} seed{'s' if len(self.runs) > 1 else ''})"


def group_configs(runs: list[Run]) -> list[Config]:
    groups: dict[str, Config] = {}
    for run in runs:
        cfg = groups.setdefault(run.configuration, Config(run.arch, run.family, run.n_ctx))
        cfg.runs.append(run)
    out = sorted(groups.values(), key=lambda c: (c.n_ctx, c.family, c.arch))
    # Two configurations with one arch label (e.g. different lr): tell them apart in the table.
    counts: dict[tuple[str, int], int] = {}
    for c in out:
        key = (c.arch, c.n_ctx)
        counts[key] = counts.get(key, 0) + 1
        if counts[key] > 1:
            c.arch = f"{c.arch} #{counts[key]}"
    for c in out:
        c.runs.sort(key=lambda r: r.seed)
    return out


def _summary(values: list[float]) -> dict[str, Any]:
    mean, lo, hi = mean_spread(values)
    return {"mean": mean, "min": lo, "max": hi, "values": values}


def _multiplier(mults: list[float | None]) -> dict[str, Any]:
    reached = [m for m in mults if m is not None]
    out: dict[str, Any] = {"reached": len(reached), "pairs": len(mults)}
    if reached:
        out["mean"], out["min"], out["max"] = geo_mean_spread(reached)
    return out


def compare_pair(a: Config, b: Config, axis: str) -> dict[str, Any]:
    """One table row. `winner` is the configuration with the lower mean loss at the matched budget;
    multipliers are `loser's x / winner's x` to reach the same loss: the loser's loss at the matched
    budget (reachable by the winner when it is ahead) and the winner's loss there ("not reached" unless
    the loser ran longer). With equal budgets these are the two final losses."""
    row: dict[str, Any] = {"axis": axis, "n_ctx": a.n_ctx, "a": a.arch, "b": b.arch,
                           "seeds_a": len(a.runs), "seeds_b": len(b.runs)}
    hw = {r.hardware for r in a.runs + b.runs}
    if axis == "time" and len(hw) > 1:
        row["skipped"] = "different hardware: " + ", ".join(sorted(h or "unrecorded" for h in hw))
        return row
    curves_a = [r.curve(axis) for r in a.runs]
    curves_b = [r.curve(axis) for r in b.runs]
    # The largest budget every seed of both configurations reached.
    budgets = [matched_budget(ca.x, cb.x) for ca in curves_a for cb in curves_b]
    if any(x is None for x in budgets):
        row["skipped"] = "the curves do not overlap on this axis"
        return row
    budget = min(budgets)
    if budget < max(c.x[0] for c in curves_a + curves_b):
        row["skipped"] = "the curves do not overlap on this axis"
        return row
    row["budget"] = budget
    for side, curves in (("a", curves_a), ("b", curves_b)):
        row[f"loss_{side}"] = _summary([value_at(c.x, c.loss, budget) for c in curves])
        bpbs = [value_at(c.x, c.bpb, budget) for c in curves]
        row[f"bpb_{side}"] = _summary(bpbs) if all(v is not None and v == v for v in bpbs) else None
    la, lb = row["loss_a"], row["loss_b"]
    row["delta"] = lb["mean"] - la["mean"]  # > 0: A is ahead
    row["winner"] = a.arch if row["delta"] > 0 else b.arch if row["delta"] < 0 else "tie"
    a_ahead = row["delta"] >= 0
    m_at_loser, m_at_winner = [], []
    for ca, cb in itertools.product(curves_a, curves_b):
        m = compute_multiplier(ca.x, ca.loss, cb.x, cb.loss, budget)
        # a_over_b: B's x / A's x to reach A's loss at the budget; b_over_a: the mirror.
        if a_ahead:
            m_at_winner.append(m["a_over_b"])
            m_at_loser.append(None if m["b_over_a"] is None else 1.0 / m["b_over_a"])
        else:
            m_at_winner.append(m["b_over_a"])
            m_at_loser.append(None if m["a_over_b"] is None else 1.0 / m["a_over_b"])
    row["mult_at_loser"] = _multiplier(m_at_loser)
    row["mult_at_winner"] = _multiplier(m_at_winner)
    if len(a.runs) > 1 or len(b.runs) > 1:
        overlap = la["min"] <= lb["max"] and lb["min"] <= la["max"]
        row["spread"] = "inside seed spread" if overlap else "outside seed spread"
    else:
        row["spread"] = "single seed"
    return row


def comparison_table(configs: list[Config], axis: str) -> list[dict[str, Any]]:
    rows = []
    for a, b in itertools.combinations(configs, 2):
        if a.n_ctx == b.n_ctx:
            rows.append(compare_pair(a, b, axis))
    return rows
