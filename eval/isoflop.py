"""`python -m eval isoflop RUN_DIR|DATA.csv... [--out DIR] [--params non_embedding|total] [--lr-policy best|each]`

IsoFLOP analysis. Inputs are run directories or CSV files of committed rows (`eval.protocol.CSV_FIELDS`,
one row per validation point; the final point of each run is used). Runs are grouped by family, n_ctx,
learning rate (see below) and FLOP budget (train.budget_flops, else the FLOPs they reached; budgets
within 10% are one group); within a group the final validation loss is fitted by a parabola in
log10(parameters). The vertex is the compute-optimal size at that budget, reported only when it lies
inside the sampled sizes (otherwise "edge": the sweep did not bracket the optimum).

Learning rates (--lr-policy): runs of one size at different LRs are not separate points of a parabola.
`best` (default): each size contributes only its run at the LR with the lowest final loss (the output
lists which LR won and among how many); `each`: one group per LR (a parabola per LR). Seeds (CSV rows
of a protocol, docs/protocol.md): the LR is chosen on seed 0 (the sweep) and the point's loss is the
mean over the seeds at that LR, so a lucky seed does not pick the point.

Across budgets, per (family, n_ctx, LR group) with at least two bracketed budgets: power laws
N_opt = k C^b and L_opt = k' C^b' (least squares in log-log), and from them the compute-optimal size and
loss at 10x the largest fitted budget -- an extrapolation, marked as one.
"""
from __future__ import annotations

import argparse
import csv
import math
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from eval.labels import split_label
from eval.runs import CompareError, check_comparable, load_runs, run_params
from stackcore.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from stackcore.errors import run_cli

BUDGET_TOLERANCE = 1.10  # budgets within 10% are one IsoFLOP group
LR_POLICIES = ("best", "each")
BEST_LR_GROUP = "best LR per size"
EXTRAPOLATION_FACTOR = 10.0


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
    lowest = u[int(np.argmin(y))]
    if lowest in (u.min(), u.max()):  # a convex fit of monotonic losses can put its vertex inside anyway
        side = "smallest" if lowest == u.min() else "largest"
        out["status"] = f"edge (the {side} size has the lowest loss: the sweep does not bracket the optimum)"
    else:
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


def _finite_or_inf(loss: float | None) -> float:
    return float(loss) if loss is not None and math.isfinite(loss) else math.inf


def select_lr(points: list[dict[str, Any]], policy: str) -> list[dict[str, Any]]:
    """The points that enter the fits, each with `budget` set to its group's budget and `lr_group`.

    best: per (family, n_ctx, budget, size) the run with the lowest final loss over its LRs, with
    `lrs_tried` (every LR of that size); each: every point, grouped by its LR."""
    if policy not in LR_POLICIES:
        raise CompareError(f"--lr-policy {policy!r}: choose one of {', '.join(LR_POLICIES)}")
    reps = group_budgets([p["budget"] for p in points])
    points = [{**p, "budget_reached": p["budget"], "budget": rep} for p, rep in zip(points, reps)]
    if policy == "each":
        return [{**p, "lr_group": "lr ?" if p.get("lr") is None else f"lr {p['lr']:g}", "lrs_tried": [p.get("lr")]}
                for p in points]
    sizes: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for p in points:
        sizes[(p["family"], p.get("n_ctx", 0), p["budget"], p["params"])].append(p)
    out = []
    for same_size in sizes.values():
        sweep = [p for p in same_size if not p.get("seed")]  # seed 0 (or unrecorded) chooses the LR
        best = min(sweep or same_size, key=lambda p: _finite_or_inf(p["loss"]))
        at_best = [p for p in same_size if p.get("lr") == best.get("lr")] if best.get("lr") is not None else [best]
        tried = sorted({p["lr"] for p in same_size if p.get("lr") is not None})
        out.append({**best, "loss": float(np.mean([_finite_or_inf(p["loss"]) for p in at_best])),
                    "seeds": len(at_best), "lr_group": BEST_LR_GROUP, "lrs_tried": tried})
    return out


def power_law(budgets: list[float], values: list[float]) -> tuple[float, float]:
    """(exponent, log10 coefficient) of value = 10^coef * budget^exponent, least squares in log-log."""
    slope, icpt = np.polyfit(np.log10(budgets), np.log10(values), 1)
    return float(slope), float(icpt)


def scaling_fit(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Power laws of the bracketed optima across budgets of one (family, n_ctx, LR group), and the
    compute-optimal size and loss at EXTRAPOLATION_FACTOR x the largest fitted budget."""
    first = rows[0]
    ok = [r for r in rows if r["fit"]["status"] == "ok"]
    out: dict[str, Any] = {"family": first["family"], "n_ctx": first["n_ctx"], "lr_group": first["lr_group"],
                           "budgets": len(ok), "budgets_total": len(rows)}
    if len(ok) < 2:
        out["status"] = f"no power law: {len(ok)} of {len(rows)} budgets bracket their optimum (need 2)"
        return out
    budgets = [r["budget"] for r in ok]
    n_exp, n_coef = power_law(budgets, [r["fit"]["params_opt"] for r in ok])
    l_exp, l_coef = power_law(budgets, [r["fit"]["loss_opt"] for r in ok])
    target = EXTRAPOLATION_FACTOR * max(budgets)
    out.update(status="ok", exponent=n_exp, log10_coef=n_coef, loss_exponent=l_exp, loss_log10_coef=l_coef,
               extrapolation={"kind": "extrapolation", "factor": EXTRAPOLATION_FACTOR, "budget": target,
                              "params_opt": float(10 ** (n_coef + n_exp * math.log10(target))),
                              "loss_opt": float(10 ** (l_coef + l_exp * math.log10(target)))})
    notes = ["2 budgets: the power laws pass through both optima exactly (no residual to judge them)"] \
        if len(ok) == 2 else []
    if n_exp <= 0:
        notes.append("N_opt does not grow with compute: not a credible scaling law")
    if notes:
        out["note"] = "; ".join(notes)
    return out


def isoflop_fits(points: list[dict[str, Any]], lr_policy: str = "best") -> dict[str, Any]:
    """points: [{family, n_ctx, lr, budget, params, loss, run}] -> {'groups': [...], 'scaling': [...]}.
    Groups are (family, n_ctx, LR group, budget); scaling is one entry per (family, n_ctx, LR group)."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for p in select_lr(points, lr_policy):
        if math.isfinite(_finite_or_inf(p["loss"])):  # a diverged run has no place on a parabola
            groups[(p["family"], int(p.get("n_ctx", 0)), p["lr_group"], p["budget"])].append(p)
    rows = []
    for (family, n_ctx, lr_group, budget), pts in sorted(groups.items()):
        pts.sort(key=lambda p: p["params"])
        fit = fit_parabola([p["params"] for p in pts], [p["loss"] for p in pts])
        rows.append({"family": family, "n_ctx": n_ctx, "lr_group": lr_group, "budget": budget, "points": pts,
                     "fit": fit})
    series: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        series[(r["family"], r["n_ctx"], r["lr_group"])].append(r)
    return {"lr_policy": lr_policy, "groups": rows, "scaling": [scaling_fit(s) for _, s in sorted(series.items())]}


def scaling_for(result: dict[str, Any], family: str, n_ctx: int | None = None) -> list[dict[str, Any]]:
    return [s for s in result["scaling"] if s["family"] == family and n_ctx in (None, s["n_ctx"])]


def plot_isoflop(result: dict[str, Any], out_png: Path) -> Path:
    """One panel per (n_ctx, LR group): points, parabolas, fitted optima (stars) and the 10x
    extrapolated optimum (hollow star, labelled as an extrapolation)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from eval.plots import LINE_STYLES, family_colour, save_figure
    panels = sorted({(g["n_ctx"], g["lr_group"]) for g in result["groups"]})
    budgets = sorted({g["budget"] for g in result["groups"]})
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(6.4 * max(1, len(panels)), 4.6), squeeze=False)
    for ax, (n_ctx, lr_group) in zip(axes[0], panels):
        for g in (g for g in result["groups"] if (g["n_ctx"], g["lr_group"]) == (n_ctx, lr_group)):
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
        for s in result["scaling"]:
            if (s["n_ctx"], s["lr_group"]) == (n_ctx, lr_group) and "extrapolation" in s:
                x = s["extrapolation"]
                ax.plot(x["params_opt"], x["loss_opt"], "*", markersize=14, markerfacecolor="none",
                        color=family_colour(s["family"]),
                        label=f"{s['family']} @ {x['budget']:.2g}: extrapolation")
        ax.set_xscale("log")
        ax.set_xlabel("parameters")
        ax.set_ylabel("final validation loss (nats/token)")
        ax.set_title(f"IsoFLOP, n_ctx {n_ctx}, {lr_group} (star: fitted optimum)", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    return save_figure(fig, out_png, dpi=100)


def _lr_cell(p: dict[str, Any]) -> str:
    lr = "?" if p.get("lr") is None else f"{p['lr']:g}"
    tried = p.get("lrs_tried") or []
    return f"{lr} (best of {', '.join(f'{x:g}' for x in tried)})" if len(tried) > 1 else lr


def points_table(result: dict[str, Any]) -> list[str]:
    lines = ["| family | n_ctx | budget (FLOPs) | shape | params | LR | final val loss | run |",
             "|---|---|---|---|---|---|---|---|"]
    for g in result["groups"]:
        for p in g["points"]:
            shape = f"d{p['d_model']}x{p['n_layers']}" if p.get("d_model") else "--"
            seeds = f" (mean of {p['seeds']} seeds)" if p.get("seeds", 1) > 1 else ""
            lines.append(f"| {g['family']} | {g['n_ctx']} | {g['budget']:.3g} | {shape} | {p['params']:,.0f} | "
                         f"{_lr_cell(p)} | {p['loss']:.4f}{seeds} | {Path(p['run']).name} |")
    return lines


def scaling_table(result: dict[str, Any]) -> list[str]:
    lines = ["| family | n_ctx | LR | budgets bracketed | N_opt ~ C^b: b | L_opt ~ C^b': b' | "
             f"at {EXTRAPOLATION_FACTOR:g}x the largest budget: C | N_opt | L_opt | |", "|---|---|---|---|---|---|---|---|---|---|"]
    for s in result["scaling"]:
        head = f"| {s['family']} | {s['n_ctx']} | {s['lr_group']} | {s['budgets']} of {s['budgets_total']} |"
        if s["status"] != "ok":
            lines.append(f"{head} -- | -- | -- | -- | -- | {s['status']} |")
            continue
        x = s["extrapolation"]
        lines.append(f"{head} {s['exponent']:.3f} | {s['loss_exponent']:.4f} | {x['budget']:.3g} | "
                     f"{x['params_opt']:.3g} | {x['loss_opt']:.4f} | **extrapolation**"
                     + (f" ({s['note']})" if s.get("note") else "") + " |")
    return lines


def report_markdown(result: dict[str, Any], params_kind: str) -> str:
    policy = ("each size at its best LR (lowest final validation loss among the LRs it was trained at)"
              if result["lr_policy"] == "best" else "one parabola per LR")
    lines = ["# IsoFLOP fits\n", f"Parameters: {params_kind}. Loss: final validation loss. LR policy: {policy}. "
             "Groups: family, n_ctx, LR group, FLOP budget.\n",
             "| family | n_ctx | LR | budget (FLOPs) | runs | optimum params | loss at optimum | fit |",
             "|---|---|---|---|---|---|---|---|"]
    for g in result["groups"]:
        fit = g["fit"]
        opt = f"{fit['params_opt']:.3g}" if "params_opt" in fit else "--"
        loss = f"{fit['loss_opt']:.4f}" if "loss_opt" in fit else "--"
        lines.append(f"| {g['family']} | {g['n_ctx']} | {g['lr_group']} | {g['budget']:.3g} | {len(g['points'])} "
                     f"| {opt} | {loss} | {fit['status']} |")
    lines += ["", "Across budgets (power laws through the bracketed optima; the last columns extrapolate "
              "beyond every budget trained):", ""] + scaling_table(result)
    lines += ["", "Points (the runs that entered the fits):", ""] + points_table(result)
    return "\n".join(lines) + "\n"


def run_points(run_dirs: list[str | Path], params_kind: str) -> list[dict[str, Any]]:
    runs = load_runs(run_dirs)
    check_comparable(runs)
    points = []
    for r in runs:
        budget = float(r.config.get("train", {}).get("budget_flops") or 0) or r.final("flops")
        if not budget:
            raise CompareError(f"{r.path}: no FLOP budget (train.budget_flops) and no flops in metrics.jsonl")
        lr = r.config.get("train", {}).get("lr")
        points.append({"family": r.family, "n_ctx": r.n_ctx, "lr": None if lr is None else float(lr),
                       "budget": budget, "params": run_params(r, params_kind), "loss": r.final("val_loss"),
                       "d_model": r.model.get("d_model"), "n_layers": r.model.get("n_layers"), "run": str(r.path)})
    return points


def _csv_params(row: dict[str, str], params_kind: str) -> float:
    """Total parameters are a CSV column; non-embedding ones come from the models' accounting of the
    row's shape (they do not depend on the vocabulary, which the CSV does not record)."""
    if params_kind == "total":
        return float(row["params"])
    from pretrain.config import ModelConfig
    from pretrain.models.flops import param_counts
    cfg = ModelConfig(family=row["family"], d_model=int(float(row["d_model"])), n_layers=int(float(row["n_layers"])),
                      n_ctx=int(float(row["n_ctx"])), heads=int(float(row["heads"])))
    return float(param_counts(cfg)["non_embedding"])


def series(row: dict[str, str]) -> str:
    """The curve a row belongs to: its label's variant (`mixer-combo-s` -> `mixer-combo`: the widths of one
    model at 2 layers are points of one parabola; eval.labels), else its family. The 8-layer shapes
    (`llama-deep`) are a curve of their own: a parabola in parameters assumes one way of growing a model,
    and mixing depths would bend it."""
    variant, size = split_label(row.get("label") or row["family"])
    name = variant if variant.split("-")[0] == row["family"] else row["family"]
    return f"{name}-deep" if size == "deep" else name


def csv_points(path: Path, params_kind: str) -> list[dict[str, Any]]:
    """One point per run of a committed CSV (eval.protocol.CSV_FIELDS): its last validation row."""
    if not path.is_file():
        raise CompareError(f"{path}: no such CSV file (write it with `python -m eval.protocol export` or "
                           "scripts/isoflop_results.py)")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    missing = {"run", "family", "n_ctx", "lr", "step", "val_loss", "params", "d_model", "n_layers", "heads"} \
        - set(rows[0] if rows else {})
    if not rows or missing:
        raise CompareError(f"{path}: {'no rows' if not rows else 'missing columns ' + ', '.join(sorted(missing))}; "
                           "expected the eval.protocol.CSV_FIELDS header")
    last: dict[str, dict[str, str]] = {}
    for row in rows:
        if row["run"] not in last or int(row["step"]) > int(last[row["run"]]["step"]):
            last[row["run"]] = row
    return [{"family": series(r), "n_ctx": int(float(r["n_ctx"])), "lr": float(r["lr"]) if r["lr"] else None,
             "budget": float(r.get("budget_flops") or r["flops"]), "params": _csv_params(r, params_kind),
             "loss": float(r["val_loss"]), "d_model": int(float(r["d_model"])),
             "n_layers": int(float(r["n_layers"])), "seed": int(float(r.get("seed") or 0)), "run": run}
            for run, r in sorted(last.items())]


def load_points(inputs: list[str | Path], params_kind: str) -> list[dict[str, Any]]:
    """Points of every input: CSV files (*.csv) and run directories, in that order."""
    csvs = [Path(p) for p in inputs if str(p).endswith(".csv")]
    dirs = [p for p in inputs if not str(p).endswith(".csv")]
    # a run two protocols share (copied, same name and result) is one point; the same name with another
    # result (another corpus) stays two
    points = list({(p["run"], p["loss"]): p for c in reversed(csvs) for p in csv_points(c, params_kind)}.values())
    return sorted(points, key=lambda p: p["run"]) + (run_points(dirs, params_kind) if dirs else [])


def report_from_points(points: list[dict[str, Any]], out_md: Path, params_kind: str = "non_embedding",
                       lr_policy: str = "best", header: str = "", notes: str = "") -> str:
    """The markdown report and its plot (beside it, same stem) of these points: `header` first, then
    `notes`, then the fits; deterministic (a rerun writes identical bytes)."""
    result = isoflop_fits(points, lr_policy)
    png = plot_isoflop(result, out_md.with_suffix(".png"))
    body = report_markdown(result, params_kind)
    if notes:
        title, _, rest = body.partition("\n")
        body = f"{title}\n\n{notes.strip()}\n{rest}"
    text = header + body + f"\n![IsoFLOP curves]({png.name})\n"
    atomic_write_text(out_md, text)
    return text


def report_from_csv(paths: list[Path], out_md: Path, params_kind: str = "non_embedding",
                    lr_policy: str = "best", command: str = "") -> str:
    """report_from_points on committed CSV rows alone."""
    header = f"<!-- generated by `{command}` from the committed CSV; do not edit -->\n\n" if command else ""
    return report_from_points([p for c in paths for p in csv_points(c, params_kind)], out_md, params_kind,
                              lr_policy, header)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval isoflop", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run directories of an IsoFLOP sweep, or CSV files of its rows")
    parser.add_argument("--out", default="", help="output directory (default: isoflop/ beside the first input)")
    parser.add_argument("--params", default="non_embedding", choices=["non_embedding", "total"])
    parser.add_argument("--lr-policy", default="best", choices=list(LR_POLICIES),
                        help="best: each size at its best LR (default); each: one parabola per LR")
    args = parser.parse_args(argv)
    out = Path(args.out or Path(args.runs[0]).resolve().parent / "isoflop")

    def go() -> int:
        result = isoflop_fits(load_points(args.runs, args.params), args.lr_policy)
        out.mkdir(parents=True, exist_ok=True)
        text = report_markdown(result, args.params)
        png = plot_isoflop(result, out / "isoflop.png")
        atomic_write_bytes(out / "report.md", (text + f"\n![IsoFLOP curves]({png.name})\n").encode())
        atomic_write_json(out / "report.json", result)
        print(text)
        print(f"report: {out / 'report.md'}\nplot: {png}")
        return 0
    return run_cli(go, bad_input=(FileNotFoundError,))


if __name__ == "__main__":
    sys.exit(main())
