"""`python -m eval.sizes_summary DATA.csv [DATA2.csv ...] --doc docs/results/eval.md [--block sizes]`: the
sizes-and-depths table of the tuned comparison (protocol rule 6), recomputed from committed raw rows.

The CSVs are pooled into one comparison per FLOP budget (runs of different budgets are never compared;
data and validation set are shared by construction of the configs); a run present in two of them
(cpu-optimum-512 reuses cpu-sizes' d64 runs) counts once. One table per budget and n_ctx: a row per size (the Llama shape the other shapes were
FLOP-matched to, eval.labels), a column per model variant; each cell is the variant's final validation
loss at its own best LR, mean [min-max] over its seeds, and the compute multiplier against the same-size
tuned Llama under both conventions (dense, then useful; > 1: ahead of that Llama). The last row puts each
variant's best shape against the best Llama shape: the comparison at the compute-optimal size tried.
The table replaces the doc's text between `<!-- BLOCK:begin -->` and `<!-- BLOCK:end -->`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from eval.curves import mean_spread
from eval.improvement_report import update_doc
from eval.labels import REFERENCE, size_rank, split_label
from eval.protocol_report import best_lrs, curves, fmt_spread, read_rows, tuned_runs, versus
from stackcore.errors import UserError, run_cli

NAMES = {"llama": "Llama", "gpt": "GPT-1 style", "mixer": "flat mixer",
         "mixer-combo": "combined mixer (Toeplitz FFT + 4 heads + gate)"}
VARIANT_ORDER = ("llama", "gpt", "mixer", "mixer-combo")


def pool_name(budget: float) -> str:
    return f"{budget:.3g} FLOPs"


def pooled(paths: list[Path]) -> dict:
    """The tuned runs of every CSV pooled per budget: (pool_name(budget), n_ctx, label) -> runs at the
    label's best LR. Run names do not carry the budget, so a run is identified by (budget, name)."""
    rows, seen = [], set()
    for r in read_rows(paths):
        key = (pool_name(r["budget_flops"]), r["run"], r["step"])
        if key not in seen:
            seen.add(key)
            rows.append({**r, "protocol": key[0]})
    runs = curves(rows)
    best = best_lrs(runs)
    tuned = tuned_runs(runs, best)
    for key, group in tuned.items():  # a best LR at the sweep's edge (after its extensions) is flagged
        for c in group:
            c["lr_edge"] = best[key]["where"] != "inside"
    return tuned


def cell(runs: list[dict], ref: list[dict] | None, is_ref: bool, shape: bool = False) -> str:
    c = runs[0]
    where = f"d{int(c['d_model'])}x{int(c['n_layers'])}: " if shape else ""
    edge = " at the sweep's edge" if c.get("lr_edge") else ""
    loss = f"{where}{fmt_spread(mean_spread([r['final'] for r in runs]))} @{c['lr']:g}{edge} ({len(runs)} seeds)"
    return loss if is_ref else f"{loss}<br>{' / '.join(versus(runs, ref))}"


def table(tuned: dict, pool: str, n_ctx: int) -> str:
    labels = [k[2] for k in tuned if k[:2] == (pool, n_ctx)]
    variants = sorted({split_label(x)[0] for x in labels},
                      key=lambda v: (VARIANT_ORDER.index(v) if v in VARIANT_ORDER else len(VARIANT_ORDER), v))
    sizes = sorted({split_label(x)[1] for x in labels}, key=size_rank)
    lines = ["| size (the Llama shape matched) | " + " | ".join(NAMES.get(v, v) for v in variants) + " |",
             "|---|" + "---|" * len(variants)]
    for size in sizes:
        ref_label = f"{REFERENCE}-{size}" if size else REFERENCE
        ref = tuned.get((pool, n_ctx, ref_label))
        shape = f"{REFERENCE} d{int(ref[0]['d_model'])} x{int(ref[0]['n_layers'])}" if ref else f"({size})"
        cells = []
        for v in variants:
            runs = tuned.get((pool, n_ctx, f"{v}-{size}" if size else v))
            cells.append(cell(runs, ref, v == REFERENCE) if runs else "")
        lines.append(f"| {shape} | " + " | ".join(cells) + " |")
    lines.append("| **each variant's best shape, against the best Llama shape** | " +
                 " | ".join(best_cell(tuned, pool, n_ctx, v, labels) for v in variants) + " |")
    return "\n".join(lines)


def best_of(tuned: dict, pool: str, n_ctx: int, variant: str, labels: list[str]) -> tuple[list[dict], bool]:
    """The variant's runs at its lowest-loss shape, and whether that shape is its smallest tried (then
    the optimum is not bracketed: a smaller one might be better still)."""
    mine = [x for x in labels if split_label(x)[0] == variant]
    best = min(mine, key=lambda x: (float(np.mean([r["final"] for r in tuned[(pool, n_ctx, x)]])), x))
    two_layer = [x for x in mine if split_label(x)[1] != "deep"]
    smallest = len(two_layer) > 1 and best == min(two_layer, key=lambda x: size_rank(split_label(x)[1]))
    return tuned[(pool, n_ctx, best)], smallest


def best_cell(tuned: dict, pool: str, n_ctx: int, variant: str, labels: list[str]) -> str:
    runs, smallest = best_of(tuned, pool, n_ctx, variant, labels)
    ref, _ = best_of(tuned, pool, n_ctx, REFERENCE, labels)
    note = "<br>(its smallest size tried: optimum not bracketed)" if smallest else ""
    return f"**{cell(runs, ref, variant == REFERENCE, shape=True)}**{note}"


def summary(paths: list[Path]) -> str:
    tuned = pooled(paths)
    for pool, n_ctx in {k[:2] for k in tuned}:
        if not any(k[:2] == (pool, n_ctx) and split_label(k[2])[0] == REFERENCE for k in tuned):
            raise UserError(f"{', '.join(map(str, paths))}: no Llama runs at {pool}, n_ctx {n_ctx}; the table "
                            "compares every shape with one (add the Llama shapes to that protocol)")
    head = (f"<!-- generated by `python -m eval.sizes_summary {' '.join(p.as_posix() for p in paths)}` "
            "(make results); do not edit -->\n")
    groups = sorted({k[:2] for k in tuned}, key=lambda g: (-float(g[0].split()[0]), -g[1]))  # largest first
    parts = [f"**{pool}, n_ctx {n_ctx}**\n\n{table(tuned, pool, n_ctx)}\n" for pool, n_ctx in groups]
    return head + "\n".join(parts).rstrip("\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.sizes_summary", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data", nargs="+", help="CSV files written by `python -m eval.protocol export`")
    parser.add_argument("--doc", help="the markdown file whose marked block receives the tables (else stdout)")
    parser.add_argument("--block", default="sizes", help="the marker name (default %(default)s)")
    args = parser.parse_args(argv)

    def go() -> int:
        text = summary([Path(p) for p in args.data])
        if args.doc:
            update_doc(Path(args.doc), text, args.block)
        else:
            print(text)
        return 0
    return run_cli(go)


if __name__ == "__main__":
    sys.exit(main())
