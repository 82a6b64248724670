"""`python -m eval flexibility RUN_DIR... [--sweep DIR] [--out DIR]`: which components can be removed.

One row per run of the flexibility sweep (configs/sweeps/flexibility.toml): the variant (family, and
whether norms, residuals and nonlinear mixing are present), final validation loss, validation loss at
the matched FLOP budget (the smallest final budget of the runs that finished; log-FLOP interpolation,
never extrapolated), and training stability (eval.stability: loss spikes over 1.5x the running
minimum, non-finite steps, max grad norm). Writes report.md, flexibility.json and a training-curve plot.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from eval.curves import value_at
from eval.runs import Run, load_run
from eval.stability import SPIKE_FACTOR, stability_of_rows
from stackcore import rundir
from stackcore.atomic import atomic_write_bytes, atomic_write_json

PUBLISHED = {
    "mixer no-norm": "stable without LayerNorm at modest LR, slightly less efficient",
    "llama no-norm": "does not train stably without norms",
    "no-residual": "fails (no model trains well without residuals)",
    "linear": "trains, clearly worse than the full mixer",
    "full": "trains (reference point)",
}


def variant(run: Run) -> str:
    """'mixer', 'llama no-norm', 'mixer linear', ... from the run's model section."""
    m = run.model
    parts = [run.family]
    if m.get("linear"):
        parts.append("linear")
    if m.get("norm", True) is False:
        parts.append("no-norm")
    if m.get("residual", True) is False:
        parts.append("no-residual")
    return " ".join(parts)


def expectation(label: str, n_layers: int = 2) -> str:
    """The published outcome for a variant label ('' when the papers say nothing about it)."""
    if "linear" in label:
        return PUBLISHED["linear"]
    if "no-residual" in label:
        # one block without a skip connection is a shallow model, not the deep ablation
        return PUBLISHED["no-residual"] if n_layers > 1 else "one block: residuals do not matter"
    if label.endswith("no-norm"):
        return PUBLISHED.get(label, "")
    return PUBLISHED["full"] if " " not in label else ""


def _final_train_flops(run: Run) -> float | None:
    flops = [float(r["flops"]) for r in run.metrics if r.get("flops") is not None]
    return max(flops) if flops else None


def run_state(run: Run) -> str:
    """The trainer's final state (status.json: completed / failed / preempted ...), '?' if absent."""
    try:
        status = rundir.read_status(run.path)
    except (OSError, ValueError):  # unreadable or hand-edited: the table still prints
        return "?"
    if status is None:
        return "?"
    state = str(status.get("state", "?"))
    return f"{state}: {status['error']}" if status.get("error") and state == "failed" else state


def run_row(run: Run, budget: float | None) -> dict[str, Any]:
    curve = run.curve("flops")
    finite = [(x, y) for x, y in zip(curve.x, curve.loss) if math.isfinite(y)]
    at_budget = value_at(curve.x, curve.loss, budget) if budget else None
    stab = stability_of_rows(run.metrics)
    label = variant(run)
    return {"run": run.name, "path": str(run.path), "variant": label, "state": run_state(run), "lr": run.config.get("train", {}).get("lr"),
            "final_val_loss": finite[-1][1] if finite else None, "final_flops": _final_train_flops(run),
            "val_loss_at_budget": at_budget, "budget_flops": budget, **stab.as_dict(),
            "published": expectation(label, int(run.model.get("n_layers", 2)))}


def matched_budget(runs: list[Run]) -> float | None:
    """Smallest last-validation FLOPs among runs whose last validation loss is finite: every run that
    trained to the end is compared at that budget; a run that stopped early reads 'not reached'."""
    ends = []
    for run in runs:
        curve = run.curve("flops")
        if len(curve.x) and math.isfinite(curve.loss[-1]):
            ends.append(float(curve.x[-1]))
    return min(ends) if ends else None


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) >= 1e4 else f"{value:.{digits}f}"
    return str(value)


def report_markdown(rows: list[dict[str, Any]], budget: float | None) -> str:
    lines = [f"Matched budget: {_fmt(budget)} FLOPs (dense accounting). Spike = training loss above "
             f"{SPIKE_FACTOR}x its running minimum.", "",
             "| run | variant | lr | final val loss | val loss @ budget | spike steps (events) | non-finite "
             "| max grad norm | stable | end state | published |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        at = _fmt(r["val_loss_at_budget"]) if r["val_loss_at_budget"] is not None else "not reached"
        lines.append(f"| {r['run']} | {r['variant']} | {r['lr'] if r['lr'] is not None else '—'} | {_fmt(r['final_val_loss'])} | {at} "
                     f"| {r['spike_steps']} ({r['spike_events']}) | {r['nonfinite_steps']} "
                     f"| {_fmt(r['max_grad_norm'], 3)} | {'yes' if r['stable'] else 'no'} | {r['state'][:60]} "
                     f"| {r['published']} |")
    return "\n".join(lines) + "\n"


def plot_training(runs: list[Run], rows: list[dict[str, Any]], out_png: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from eval.plots import save_figure

    fig, ax = plt.subplots(figsize=(8, 5))
    for run, row in zip(runs, rows):
        pts = [(float(r["flops"]), float(r["train_loss"])) for r in run.metrics
               if r.get("flops") and r.get("train_loss") is not None and math.isfinite(float(r["train_loss"]))]
        if pts:
            ax.plot(*zip(*pts), label=row["variant"], linestyle="--" if "mixer" not in row["variant"] else "-")
    ax.set_xscale("log")
    ax.set_yscale("log")  # spikes of a diverging variant would otherwise flatten every other curve
    ax.set_xlabel("training FLOPs (dense)")
    ax.set_ylabel("training loss (log)")
    ax.set_title("Flexibility sweep: training loss")
    ax.legend(fontsize=8)
    return save_figure(fig, out_png)


def flexibility_report(run_dirs: list[str | Path], out_dir: str | Path, budget: float | None = None) -> list[dict]:
    runs = [load_run(p) for p in run_dirs]
    budget = budget or matched_budget(runs)
    rows = [run_row(run, budget) for run in runs]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "flexibility.json", {"budget_flops": budget, "runs": rows})
    atomic_write_bytes(out / "report.md", ("# Flexibility sweep\n\n" + report_markdown(rows, budget)).encode())
    plot_training(runs, rows, out / "training_loss.png")
    return rows


def _run_dirs(args: argparse.Namespace) -> list[Path]:
    dirs = [Path(p) for p in args.runs]
    if args.sweep:
        sweep = Path(args.sweep)
        found = sorted(p.parent for p in sweep.glob("*/config.toml"))
        if not found:
            raise SystemExit(f"{sweep}: no run directories (*/config.toml) inside; pass the sweep's run.dir")
        dirs += found
    if not dirs:
        raise SystemExit("no runs: pass run directories or --sweep DIR (the sweep's run.dir)")
    return dirs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m eval flexibility", description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="*", help="run directories")
    ap.add_argument("--sweep", help="a directory holding the sweep's run directories")
    ap.add_argument("--out", default="reports/flexibility", help="output directory (report.md, json, png)")
    ap.add_argument("--budget-flops", type=float, default=None, help="matched budget (default: see report)")
    args = ap.parse_args(argv)
    rows = flexibility_report(_run_dirs(args), args.out, args.budget_flops)
    print(report_markdown(rows, rows[0]["budget_flops"] if rows else None))
    print(f"wrote {args.out}/report.md, flexibility.json, training_loss.png")
    return 0
