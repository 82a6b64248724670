"""`python -m eval isoflop RUN_DIR... [--out DIR] [--params non_embedding|total]`

IsoFLOP analysis: runs are grouped by FLOP budget (train.budget_flops, else the FLOPs they reached,
budgets within 10% are one group) and by family; within a group the final validation loss is fitted
by a parabola in log10(parameters). The vertex is the compute-optimal size at that budget, reported
only when it lies inside the sampled sizes (otherwise "edge": the sweep did not bracket the optimum).
Across budgets, N_opt ~ C^b is fitted per family when at least two budgets are bracketed.
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from eval.runs import CompareError, check_comparable, load_runs, run_params
from stackcore.atomic import atomic_write_bytes, atomic_write_json

BUDGET_TOLERANCE = 1.10  # budgets within 10% are one IsoFLOP group


def fit_parabola(params: list[float], losses: list[float]) -> dict[str, Any]:
    """loss = a*u^2 + b*u + c with u = log10(params); the optimum is the vertex when a > 0."""
    u = np.log10(np.asarray(params, dtype=float))
    y = np.asarray(losses, dtype=float)
    if len(np.unique(u)) < 3:
        return {"status": "too few sizes (need 3)", "n": int(len(u))}
    a, b, c = np.polyfit(u, y, 2)
    out: dict[str, Any] = {"a": float(a), "b": float(b), "c": float(c), "n": int(len(u)),
                           "residual_rms": float(np.sqrt(np.mean((np.polyval([a, b, c], u) - y) ** 2)))}
    if a <= 0:
        out["status"] = "not U-shaped (no minimum)"
        return out
    u_opt = -b / (2 * a)
    out.update(params_opt=float(10 ** u_opt), loss_opt=float(np.polyval([a, b, c], u_opt)))
    out["status"] = "ok" if u.min() <= u_opt <= u.max() else "edge (optimum outside the sampled sizes)"
    return out


def group_budgets(budgets: list[float]) -> list[float]:
    """A representative budget (geometric mean of its cluster) for each input budget."""
    order = np.argsort(budgets)
    clusters: list[list[int]] = []
    for i in order:
        if clusters and budgets[i] <= budgets[clusters[-1][0]] * BUDGET_TOLERANCE:
            clusters[-1].append(int(i))
        else:
            clusters.append([int(i)])
    rep = [0.0] * len(budgets)
    for cl in clusters:
        g = float(np.exp(np.mean(np.log([budgets[i] for i in cl]))))
        for i in cl:
            rep[i] = g
    return rep


def isoflop_fits(points: list[dict[str, Any]]) -> dict[str, Any]:
    """points: [{family, budget, params, loss, run}] -> {'groups': [...], 'scaling': {family: {...}}}."""
    reps = group_budgets([p["budget"] for p in points])
    groups: dict[tuple[str, float], list[dict[str, Any]]] = defaultdict(list)
    for p, rep in zip(points, reps):
        groups[(p["family"], rep)].append(p)
    rows = []
    for (family, budget), pts in sorted(groups.items()):
        pts.sort(key=lambda p: p["params"])
        fit = fit_parabola([p["params"] for p in pts], [p["loss"] for p in pts])
        rows.append({"family": family, "budget": budget, "points": pts, "fit": fit})
    scaling = {}
    for family in sorted({r["family"] for r in rows}):
        ok = [r for r in rows if r["family"] == family and r["fit"]["status"] == "ok"]
        if len(ok) >= 2:
            slope, icpt = np.polyfit(np.log10([r["budget"] for r in ok]),
                                     np.log10([r["fit"]["params_opt"] for r in ok]), 1)
            scaling[family] = {"exponent": float(slope), "log10_coef": float(icpt), "budgets": len(ok)}
    return {"groups": rows, "scaling": scaling}


def plot_isoflop(result: dict[str, Any], out_png: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from eval.plots import LINE_STYLES, family_colour, save_figure
    budgets = sorted({g["budget"] for g in result["groups"]})
    fig, ax = plt.subplots(figsize=(7, 4.6))
    for g in result["groups"]:
        colour, style = family_colour(g["family"]), LINE_STYLES[budgets.index(g["budget"]) % len(LINE_STYLES)]
        n = np.array([p["params"] for p in g["points"]])
        ax.plot(n, [p["loss"] for p in g["points"]], "o", color=colour)
        fit = g["fit"]
        if "a" in fit:
            u = np.linspace(np.log10(n.min()), np.log10(n.max()), 100)
            ax.plot(10 ** u, np.polyval([fit["a"], fit["b"], fit["c"]], u), style, color=colour,
                    label=f"{g['family']} @ {g['budget']:.2g} FLOPs")
        if fit["status"] == "ok":
            ax.plot(fit["params_opt"], fit["loss_opt"], "*", color=colour, markersize=13, markeredgecolor="k")
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("final validation loss (nats/token)")
    ax.set_title("IsoFLOP curves (star: fitted optimum)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, out_png)


def report_markdown(result: dict[str, Any], params_kind: str) -> str:
    lines = ["# IsoFLOP fits\n", f"Parameters: {params_kind}. Loss: final validation loss.\n",
             "| family | budget (FLOPs) | runs | optimum params | loss at optimum | fit |", "|---|---|---|---|---|---|"]
    for g in result["groups"]:
        fit = g["fit"]
        opt = f"{fit['params_opt']:.3g}" if "params_opt" in fit else "--"
        loss = f"{fit['loss_opt']:.4f}" if "loss_opt" in fit else "--"
        lines.append(f"| {g['family']} | {g['budget']:.3g} | {len(g['points'])} | {opt} | {loss} | {fit['status']} |")
    if result["scaling"]:
        lines += ["", "| family | N_opt ~ C^b: b | budgets |", "|---|---|---|"]
        lines += [f"| {f} | {s['exponent']:.3f} | {s['budgets']} |" for f, s in result["scaling"].items()]
    return "\n".join(lines) + "\n"


def run_points(run_dirs: list[str | Path], params_kind: str) -> list[dict[str, Any]]:
    runs = load_runs(run_dirs)
    check_comparable(runs)
    points = []
    for r in runs:
        budget = float(r.config.get("train", {}).get("budget_flops") or 0) or r.final("flops")
        if not budget:
            raise CompareError(f"{r.path}: no FLOP budget (train.budget_flops) and no flops in metrics.jsonl")
        points.append({"family": r.family, "budget": budget, "params": run_params(r, params_kind),
                       "loss": r.final("val_loss"), "run": str(r.path)})
    return points


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval isoflop", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run directories of an IsoFLOP sweep")
    parser.add_argument("--out", default="", help="output directory (default: isoflop/ beside the first run)")
    parser.add_argument("--params", default="non_embedding", choices=["non_embedding", "total"])
    args = parser.parse_args(argv)
    out = Path(args.out or Path(args.runs[0]).resolve().parent / "isoflop")
    try:
        result = isoflop_fits(run_points(args.runs, args.params))
    except (CompareError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    text = report_markdown(result, args.params)
    png = plot_isoflop(result, out / "isoflop.png")
    atomic_write_bytes(out / "report.md", (text + f"\n![IsoFLOP curves]({png.name})\n").encode())
    atomic_write_json(out / "report.json", result)
    print(text)
    print(f"report: {out / 'report.md'}\nplot: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
