"""`python -m eval compare RUN_DIR... [--x flops|tokens|time] [--out DIR]`

Writes OUT/report.md (the comparison tables), OUT/report.json (the same numbers, full precision),
OUT/curves.csv (every validation point of every run) and PNG plots of validation loss and bits per
byte against FLOPs, tokens and wall time. Refuses runs whose validation data or tokenizer differ.
"""
from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path
from typing import Any

from eval.pairs import Config, comparison_table, group_configs
from eval.plots import plot_curves
from eval.runs import AXES, AXIS_LABELS, CompareError, Run, check_comparable, load_runs
from stackcore.atomic import atomic_write_bytes, atomic_write_json
from stackcore.errors import run_cli

CSV_FIELDS = ("run", "arch", "family", "n_ctx", "seed", "step", "tokens", "flops", "wall_s", "val_loss", "val_bpb")


def fmt_x(x: float, axis: str) -> str:
    return f"{x:.0f} s" if axis == "time" else f"{x:.3g}"


def fmt_summary(s: dict[str, Any] | None, digits: int = 4) -> str:
    if s is None:
        return "n/a"
    if len(s["values"]) == 1:
        return f"{s['mean']:.{digits}f}"
    return f"{s['mean']:.{digits}f} [{s['min']:.{digits}f}-{s['max']:.{digits}f}]"


def fmt_mult(m: dict[str, Any]) -> str:
    if not m["reached"]:
        return "not reached"
    text = f"{m['mean']:.2f}x" if m["pairs"] == 1 else f"{m['mean']:.2f}x [{m['min']:.2f}-{m['max']:.2f}]"
    if m["reached"] < m["pairs"]:
        text += f" ({m['reached']}/{m['pairs']} seed pairs; rest not reached)"
    return text


TABLE_HEAD = ("| n_ctx | A | B | matched {x} | loss A | loss B | bpb A | bpb B | ahead | multiplier at loser's "
              "loss | multiplier at winner's loss | seeds |\n"
              "|---|---|---|---|---|---|---|---|---|---|---|---|")


def table_markdown(rows: list[dict[str, Any]], axis: str) -> str:
    lines = [TABLE_HEAD.format(x={"flops": "FLOPs", "tokens": "tokens", "time": "time"}[axis])]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['n_ctx']} | {r['a']} | {r['b']} | -- | | | | | | | | {r['skipped']} |")
            continue
        lines.append(
            f"| {r['n_ctx']} | {r['a']} | {r['b']} | {fmt_x(r['budget'], axis)} | {fmt_summary(r['loss_a'])} | "
            f"{fmt_summary(r['loss_b'])} | {fmt_summary(r['bpb_a'])} | {fmt_summary(r['bpb_b'])} | "
            f"{r['winner']} | {fmt_mult(r['mult_at_loser'])} | {fmt_mult(r['mult_at_winner'])} | "
            f"{r['seeds_a']}+{r['seeds_b']}, {r['spread']} |")
    return "\n".join(lines)


def runs_markdown(configs: list[Config]) -> str:
    lines = ["| run | architecture | n_ctx | seed | final FLOPs | final tokens | wall s | final val loss | final bpb |",
             "|---|---|---|---|---|---|---|---|---|"]
    for c in configs:
        for r in c.runs:
            last = r.val_rows()[-1]
            bpb = last.get("val_bpb")
            lines.append(f"| {r.name} | {c.arch} | {r.n_ctx} | {r.seed} | {float(last.get('flops') or 0):.3g} | "
                         f"{int(last.get('tokens') or 0)} | {float(last.get('wall_s') or 0):.0f} | "
                         f"{float(last['val_loss']):.4f} | {'n/a' if bpb is None else f'{float(bpb):.4f}'} |")
    return "\n".join(lines)


HOW_TO_READ = """How to read a row: A and B share n_ctx and validation data. *matched* is the largest budget both
reached; the losses are interpolated there (linear in log x between validation points, never
extrapolated). *ahead* has the lower mean loss there. A multiplier M means the configuration behind needs
M times the budget of the one ahead to reach the same loss: the loss the one behind has at the matched
budget, and the loss the one ahead has there ("not reached" unless the one behind ran longer and got
there: we do not extrapolate). With equal budgets these are the two final losses. With several
seeds: mean [min-max] over seeds (multipliers: geometric mean over seed pairs); *inside seed spread*
means the seed ranges overlap, so the difference is not resolved by these runs."""


def write_csv(runs: list[Run], path: Path) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS)
    writer.writeheader()
    for r in runs:
        for row in r.val_rows():
            writer.writerow({"run": r.name, "arch": r.arch, "family": r.family, "n_ctx": r.n_ctx, "seed": r.seed,
                             **{k: row.get(k) for k in CSV_FIELDS[5:]}})
    atomic_write_bytes(path, buf.getvalue().encode())


def compare(run_dirs: list[str | Path], out_dir: str | Path, primary: str = "flops",
            check_data: bool = True) -> dict[str, Any]:
    """The whole command as a function: returns {'tables': {axis: rows}, 'report', 'plots', ...}."""
    if primary not in AXES:
        raise CompareError(f"--x must be one of {list(AXES)}, got {primary!r}")
    if len(run_dirs) < 1:
        raise CompareError("give at least one run directory")
    runs = load_runs(run_dirs)
    validation = check_comparable(runs, allow_unknown=not check_data)
    configs = group_configs(runs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    axes = [primary] + [a for a in AXES if a != primary]
    tables = {axis: comparison_table(configs, axis) for axis in axes}
    plots = {}
    for axis in axes:
        if all(r.curve(axis).x.size for r in runs):
            plots[axis] = plot_curves(runs, axis, out_dir / f"loss_vs_{axis}.png",
                                      title=f"validation loss and bits per byte vs {AXIS_LABELS[axis]}")
    parts = ["# Loss at matched compute\n",
             f"Runs: {len(runs)} in {len(configs)} configurations. Validation set: "
             + (", ".join(f"{k} `{v}`" for k, v in validation.items()) if validation else "not checked") + "\n",
             "## Runs\n", runs_markdown(configs) + "\n", HOW_TO_READ + "\n"]
    for axis in axes:
        parts += [f"## Matched {AXIS_LABELS[axis]}\n",
                  table_markdown(tables[axis], axis) if tables[axis] else "(no pairs with a shared n_ctx)", ""]
        if axis in plots:
            parts.append(f"![loss vs {axis}]({plots[axis].name})\n")
    report = out_dir / "report.md"
    atomic_write_bytes(report, "\n".join(parts).encode())
    atomic_write_json(out_dir / "report.json", {"validation": validation, "tables": tables,
                                                "runs": [str(r.path) for r in runs]})
    write_csv(runs, out_dir / "curves.csv")
    return {"tables": tables, "report": report, "plots": plots, "csv": out_dir / "curves.csv",
            "markdown": table_markdown(tables[primary], primary) if tables[primary] else ""}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run directories (runs/NAME) written by pretrain.train")
    parser.add_argument("--x", default="flops", choices=list(AXES), help="primary x-axis (table order)")
    parser.add_argument("--out", default="", help="output directory (default: compare/ beside the first run)")
    parser.add_argument("--no-data-check", action="store_true",
                        help="compare even when the validation set cannot be identified (not when it differs)")
    args = parser.parse_args(argv)
    out = args.out or str(Path(args.runs[0]).resolve().parent / "compare")
    try:
        result = compare(args.runs, out, args.x, check_data=not args.no_data_check)
    except (CompareError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(result["markdown"])
    print(f"\nreport: {result['report']}\ncurves: {result['csv']}")
    for axis, png in result["plots"].items():
        print(f"plot ({axis}): {png}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, bad_input=(FileNotFoundError,)))
