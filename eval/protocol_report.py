"""`python -m eval.protocol_report DATA.csv [DATA2.csv ...] --out DIR`: the tuned comparison's tables and
plots, recomputed from the committed raw rows alone (no run directories, no training; deterministic).

Per (protocol, n_ctx): the LR sweep of every shape (seed 0; best marked, an edge best flagged), then each
shape at its best LR with its seeds: final validation loss mean [min-max], and the compute multiplier
against the tuned Llama under both FLOP conventions (dense = what runs today; useful = only the causal
half of mixing/attention, what a kernel skipping masked work executes). Multiplier m: the FLOPs the
tuned Llama needs to reach this shape's final loss, over this shape's FLOPs (m > 1: this shape is more
compute-efficient); geometric mean and [min-max] over all seed pairs.

Sizes and depths (rule 6): a shape labelled `FAMILY-SUFFIX` (e.g. `mixer-s`) is compared with the tuned
Llama of the same suffix (`llama-s`, the Llama shape it was FLOP-matched to) when the protocol has one,
else with `llama`. With more than one Llama shape, a per-family summary compares each family's best
shape with the best Llama shape: the compute-optimal comparison at the budget.
"""
from __future__ import annotations

import argparse
import csv
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from eval.curves import compute_multiplier, geo_mean_spread, mean_spread
from eval.labels import REFERENCE, reference_for, size_rank, split_label
from stackcore.atomic import atomic_write_text
from stackcore.errors import UserError, run_cli

NUMERIC = ("n_ctx", "lr", "seed", "d_model", "n_layers", "heads", "params", "flops_per_token",
           "useful_flops_per_token", "step", "tokens", "flops", "flops_useful", "wall_s", "train_loss", "val_loss",
           "val_bpb", "budget_flops")


def read_rows(paths: list[Path]) -> list[dict[str, Any]]:
    rows = []
    for path in paths:
        if not path.is_file():
            raise UserError(f"{path}: no such data file; run `python -m eval.protocol export --config ...` first")
        with open(path, newline="") as fh:
            for row in csv.DictReader(fh):
                rows.append({k: (float(v) if k in NUMERIC and v != "" else (None if v == "" else v))
                             for k, v in row.items()})
    if not rows:
        raise UserError(f"{', '.join(map(str, paths))}: no rows")
    return rows


def curves(rows: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """(protocol, run name) -> {meta..., x (dense FLOPs), xu (useful FLOPs), y (val loss)} sorted by step.
    Keyed by protocol too: two protocols may share a run (cpu-sizes reuses cpu-ctx's d128 x 2 runs)."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for r in sorted(rows, key=lambda r: (r["protocol"], r["run"], r["step"])):
        c = out.setdefault((r["protocol"], r["run"]), {**{k: r[k] for k in ("protocol", "stage", "label", "family", "n_ctx", "lr",
                                                            "seed", "d_model", "n_layers", "heads", "params",
                                                            "flops_per_token", "useful_flops_per_token",
                                                            "hardware")}, "x": [], "xu": [], "y": []})
        c["x"].append(r["flops"])
        c["xu"].append(r["flops_useful"])
        c["y"].append(r["val_loss"])
    for c in out.values():
        c["x"], c["xu"], c["y"] = (np.asarray(c[k], dtype=float) for k in ("x", "xu", "y"))
        c["final"] = float(c["y"][-1])
    return out


def best_lrs(runs: dict[str, dict]) -> dict[tuple, dict[str, Any]]:
    """(protocol, n_ctx, label) -> {lr, where, sweep: {lr: final loss of seed 0}}."""
    sweeps: dict[tuple, dict[float, float]] = defaultdict(dict)
    for c in runs.values():
        if c["stage"] == "lr":
            sweeps[(c["protocol"], int(c["n_ctx"]), c["label"])][c["lr"]] = c["final"]
    out = {}
    for key, sweep in sweeps.items():
        lrs = sorted(sweep)
        best = min(lrs, key=lambda lr: sweep[lr] if np.isfinite(sweep[lr]) else np.inf)
        where = "low edge" if best == lrs[0] else "high edge" if best == lrs[-1] else "inside"
        out[key] = {"lr": best, "where": where, "sweep": sweep}
    return out


def tuned_runs(runs: dict[str, dict], best: dict[tuple, dict]) -> dict[tuple, list[dict]]:
    """(protocol, n_ctx, label) -> the runs at the best LR (seed 0 from the sweep plus the seed runs)."""
    out: dict[tuple, list[dict]] = defaultdict(list)
    for c in runs.values():
        key = (c["protocol"], int(c["n_ctx"]), c["label"])
        if key in best and c["lr"] == best[key]["lr"]:
            out[key].append(c)
    return {k: sorted(v, key=lambda c: c["seed"]) for k, v in out.items()}


def multiplier(variant: list[dict], reference: list[dict], axis: str) -> tuple[float, float, float] | None:
    """Geometric mean [min, max] over seed pairs of m = reference x to reach the variant's final loss /
    the variant's x (m > 1: the variant is ahead). None when a pair cannot be resolved either way."""
    ms = []
    for v in variant:
        for r in reference:
            m = compute_multiplier(v[axis], v["y"], r[axis], r["y"])
            if m["a_over_b"] is not None:
                ms.append(m["a_over_b"])
            elif m["b_over_a"] is not None:
                ms.append(1.0 / m["b_over_a"])
    return geo_mean_spread(ms) if len(ms) == len(variant) * len(reference) and ms else None


def size_group(label: str) -> str:
    """`mixer-s` -> `s`, `mixer` -> `` (the size tag naming the Llama shape a shape was matched to)."""
    return split_label(label)[1]


FAMILY_ORDER = {REFERENCE: 0, "gpt": 1, "mixer": 2}  # table rows: the reference, the baselines, the rest


def shape_order(label: str) -> tuple:
    family = label.partition("-")[0]
    return (size_rank(size_group(label)), FAMILY_ORDER.get(family, len(FAMILY_ORDER)), label)


def fmt_spread(s: tuple[float, float, float] | None, digits: int = 4, unit: str = "") -> str:
    if s is None:
        return "not resolved"
    return f"{s[0]:.{digits}f}{unit} [{s[1]:.{digits}f}-{s[2]:.{digits}f}]"


def sweep_table(best: dict[tuple, dict], protocol: str, n_ctx: int) -> str:
    keys = sorted((k for k in best if k[0] == protocol and k[1] == n_ctx), key=lambda k: shape_order(k[2]))
    lrs = sorted({lr for k in keys for lr in best[k]["sweep"]})
    lines = ["| shape | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " | best |",
             "|---|" + "---|" * (len(lrs) + 1)]
    for k in keys:
        b = best[k]
        cells = []
        for lr in lrs:
            v = b["sweep"].get(lr)
            text = "" if v is None else ("diverged" if not np.isfinite(v) else f"{v:.4f}")
            cells.append(f"**{text}**" if lr == b["lr"] else text)
        flag = "" if b["where"] == "inside" else f" ({b['where']}: extend the sweep)"
        lines.append(f"| {k[2]} | " + " | ".join(cells) + f" | {b['lr']:g}{flag} |")
    return "\n".join(lines)


def describe(label: str, c: dict) -> str:
    return f"{label} ({c['family']} d{int(c['d_model'])}x{int(c['n_layers'])} h{int(c['heads'])})"


def versus(runs: list[dict], ref: list[dict] | None) -> tuple[str, str]:
    if not ref:
        return "no tuned Llama", "no tuned Llama"
    return fmt_spread(multiplier(runs, ref, "x"), 2, "x"), fmt_spread(multiplier(runs, ref, "xu"), 2, "x")


def tuned_table(tuned: dict[tuple, list[dict]], best: dict[tuple, dict], protocol: str, n_ctx: int) -> str:
    labels = {k[2] for k in tuned if k[0] == protocol and k[1] == n_ctx}
    lines = ["| shape | best lr | params | FLOPs/token dense (useful) | seeds | val loss at budget | "
             "multiplier vs tuned Llama, dense | multiplier, useful |", "|---|---|---|---|---|---|---|---|"]
    for label in sorted(labels, key=shape_order):
        k = (protocol, n_ctx, label)
        runs, c = tuned[k], tuned[k][0]
        ref_label = reference_for(label, labels)
        if label == ref_label:
            m_dense = m_useful = "reference"
        else:
            m_dense, m_useful = versus(runs, tuned.get((protocol, n_ctx, ref_label)))
            if ref_label != REFERENCE:
                m_dense += f" (vs {ref_label})"
        loss = fmt_spread(mean_spread([r["final"] for r in runs]))
        lines.append(f"| {describe(label, c)} | {best[k]['lr']:g} | {int(c['params']):,} | "
                     f"{c['flops_per_token']:.3g} ({c['useful_flops_per_token']:.3g}) | {len(runs)} | {loss} | "
                     f"{m_dense} | {m_useful} |")
    return "\n".join(lines)


def best_shapes(tuned: dict[tuple, list[dict]], protocol: str, n_ctx: int) -> dict[str, str]:
    """family -> its label with the lowest mean final loss at this n_ctx (the compute-optimal shape tried)."""
    out: dict[str, tuple[float, str]] = {}
    for (p, n, label), runs in tuned.items():
        if p == protocol and n == n_ctx:
            loss = float(np.mean([r["final"] for r in runs]))
            family = runs[0]["family"]
            if family not in out or (loss, label) < out[family]:
                out[family] = (loss, label)
    return {family: label for family, (_, label) in out.items()}


def best_shape_table(tuned: dict[tuple, list[dict]], protocol: str, n_ctx: int) -> str:
    """Each family's best shape against the best Llama shape, at the same budget (None: one shape each)."""
    labels = [k[2] for k in tuned if k[0] == protocol and k[1] == n_ctx]
    if sum(1 for label in labels if label.partition("-")[0] == REFERENCE) < 2:
        return ""
    best = best_shapes(tuned, protocol, n_ctx)
    ref = tuned.get((protocol, n_ctx, best.get(REFERENCE, "")))
    lines = ["| family | best shape (of its sizes and depths) | best lr | seeds | val loss at budget | "
             "multiplier vs the best Llama shape, dense | multiplier, useful |", "|---|---|---|---|---|---|---|"]
    for family in sorted(best, key=lambda f: (FAMILY_ORDER.get(f, len(FAMILY_ORDER)), f)):
        runs = tuned[(protocol, n_ctx, best[family])]
        m_dense, m_useful = ("reference", "reference") if family == REFERENCE else versus(runs, ref)
        lines.append(f"| {family} | {describe(best[family], runs[0])} | {runs[0]['lr']:g} | {len(runs)} | "
                     f"{fmt_spread(mean_spread([r['final'] for r in runs]))} | {m_dense} | {m_useful} |")
    return "\n".join(lines)


def plot_tuned(tuned: dict[tuple, list[dict]], protocol: str, out_png: Path) -> Path:
    from eval.plots import save_figure  # first: it selects the Agg backend
    import matplotlib.pyplot as plt

    ctxs = sorted({k[1] for k in tuned if k[0] == protocol})
    fig, axes = plt.subplots(1, len(ctxs), figsize=(4.2 * len(ctxs), 3.6), squeeze=False)
    colours = {"llama": "tab:blue", "gpt": "tab:green", "mixer": "tab:red"}
    groups = sorted({size_group(k[2]) for k in tuned if k[0] == protocol}, key=size_rank)
    styles = ["-", "--", ":", "-."]
    for ax, n_ctx in zip(axes[0], ctxs):
        for k in sorted((k for k in tuned if k[0] == protocol and k[1] == n_ctx), key=lambda k: shape_order(k[2])):
            style = styles[groups.index(size_group(k[2])) % len(styles)]
            for i, c in enumerate(tuned[k]):
                ax.plot(c["x"], c["y"], color=colours.get(c["family"], "tab:gray"), alpha=0.8, lw=1.2, ls=style,
                        label=f"{k[2]} lr {c['lr']:g}" if i == 0 else None)
        ax.set_xscale("log")
        ax.set_title(f"n_ctx {n_ctx}", fontsize=10)
        ax.set_xlabel("training FLOPs (dense)")
        ax.set_ylabel("validation loss (nats/token)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{protocol}: each family at its best LR, all seeds", fontsize=10)
    return save_figure(fig, out_png, dpi=100)


def plot_lr(best: dict[tuple, dict], protocol: str, out_png: Path) -> Path:
    from eval.plots import save_figure  # first: it selects the Agg backend
    import matplotlib.pyplot as plt

    ctxs = sorted({k[1] for k in best if k[0] == protocol})
    fig, axes = plt.subplots(1, len(ctxs), figsize=(4.2 * len(ctxs), 3.4), squeeze=False)
    for ax, n_ctx in zip(axes[0], ctxs):
        for k in sorted(k for k in best if k[0] == protocol and k[1] == n_ctx):
            lrs = sorted(best[k]["sweep"])
            ax.plot(lrs, [best[k]["sweep"][lr] for lr in lrs], marker="o", label=k[2])
        ax.set_xscale("log")
        ax.set_title(f"n_ctx {n_ctx}: final val loss by LR (seed 0)", fontsize=9)
        ax.set_xlabel("peak learning rate")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    return save_figure(fig, out_png, dpi=100)


def report(paths: list[Path], out: Path) -> str:
    runs = curves(read_rows(paths))
    best = best_lrs(runs)
    tuned = tuned_runs(runs, best)
    parts = [f"<!-- generated by `python -m eval.protocol_report {' '.join(p.as_posix() for p in paths)} "
             f"--out {out.as_posix()}` (make results); do not edit -->"]
    for protocol in sorted({k[0] for k in best}):
        hardware = sorted({c["hardware"] for c in runs.values() if c["protocol"] == protocol})
        parts.append(f"# Protocol `{protocol}`\n\nHardware: {'; '.join(hardware)}. "
                     f"{sum(c['protocol'] == protocol for c in runs.values())} runs.\n")
        for n_ctx in sorted({k[1] for k in best if k[0] == protocol}):
            parts.append(f"## n_ctx {n_ctx}\n\nLR sweep (seed 0, final validation loss; best in bold):\n\n"
                         f"{sweep_table(best, protocol, n_ctx)}\n\nEach shape at its best LR:\n\n"
                         f"{tuned_table(tuned, best, protocol, n_ctx)}\n")
            summary = best_shape_table(tuned, protocol, n_ctx)
            if summary:
                parts.append("Each family's best shape (the lowest mean loss among its sizes and depths, each "
                             f"at its own best LR) against the best Llama shape:\n\n{summary}\n")
        p1 = plot_tuned(tuned, protocol, out / f"{protocol}-tuned.png")
        p2 = plot_lr(best, protocol, out / f"{protocol}-lr.png")
        parts.append(f"![tuned curves]({p1.name})\n\n![LR sweeps]({p2.name})\n")
    text = "\n".join(parts)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "report.md", text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.protocol_report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="+", help="CSV files written by `python -m eval.protocol export`")
    parser.add_argument("--out", required=True, help="directory for report.md and the plots")
    args = parser.parse_args(argv)
    return run_cli(lambda: print(report([Path(p) for p in args.data], Path(args.out))))


if __name__ == "__main__":
    sys.exit(main())
