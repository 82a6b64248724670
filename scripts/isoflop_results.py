"""The IsoFLOP sweep at CPU scale (issue 13) and its report, recomputed from the committed CSV alone.

    .venv/bin/python scripts/isoflop_results.py            # train what is missing, export the CSV, report
    .venv/bin/python scripts/isoflop_results.py --report   # docs/results/isoflop.md + plot from the CSV only

Sweep: TinyStories (the shared lower-case sample, a 2,048-token BPE, 5 % held out), n_ctx 128, 2,048
tokens per step (batch 16), Llama (4 heads) at d 16/24/32/48/96/192 x 2 layers and d 48/96 x 4 layers; the
masked mixer at the shape `eval.match.plan` pairs with each Llama shape (closest dense training
FLOPs/token). Budgets 3e11 and 1e12 dense training FLOPs (on the shared 2-core machine a 1e12 run
takes about 1.5 min). One LR per family, chosen by a 3-value mini-sweep (LR_SWEEP) of the middle shape
(d96 x 2 and its mixer) at 1e12 FLOPs, extended by a factor 2 beyond an edge best (at most twice, as
in eval.protocol): the LR with the lowest final validation loss is used for every other run of that
family. One seed. Finished runs
(status "completed") are reused, so an interrupted sweep continues where it stopped.

The CSV rows follow `eval.protocol.CSV_FIELDS` (one row per validation point); `--report` runs
`eval.isoflop` on them with the best-LR-per-size policy (`--lr-policy best`).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eval.launch import prep_corpus, train_run  # noqa: E402
from eval.match import plan  # noqa: E402
from eval.protocol import final_val_loss, write_csv  # noqa: E402
from pretrain.config import ModelConfig  # noqa: E402
from pretrain.models.flops import param_counts, training_flops_per_token  # noqa: E402
from stackcore import rundir  # noqa: E402
from stackcore.errors import UserError, run_cli  # noqa: E402
from stackcore.paths import shared_dir  # noqa: E402

PROTOCOL = "isoflop-cpu"
CSV = ROOT / "docs" / "results" / "data" / "isoflop-cpu.csv"
REPORT = ROOT / "docs" / "results" / "isoflop.md"
CORPUS = "tinystories/train-lower.jsonl.zst"
VOCAB, N_CTX, BATCH, VAL_TOKENS, EVALS = 2048, 128, 16, 8192, 6
BUDGETS = (3e11, 1e12)
LR_SWEEP_BUDGET = 1e12  # the larger budget: the LR that matters most for the final loss
# (d_model, n_layers); d16-d32 were added after first passes in which the smallest size won
LLAMA_SHAPES = ((16, 2), (24, 2), (32, 2), (48, 2), (96, 2), (192, 2), (48, 4), (96, 4))
MIDDLE = (96, 2)  # the shape whose LR mini-sweep picks each family's LR
LR_SWEEP = (2e-3, 4e-3, 8e-3)
MAX_EXTENSIONS = 2  # an edge best LR extends the mini-sweep by factor-2 steps, at most this often
HARDWARE = "cpu: 2 cores shared with other jobs, torch fp32, one process, nice 10"


def shapes(family: str) -> dict[tuple[int, int], ModelConfig]:
    """Llama shape (d, layers) -> this family's config at that shape (the mixer FLOP-matched to it)."""
    out = {}
    for d, layers in LLAMA_SHAPES:
        llama = ModelConfig(family="llama", d_model=d, n_layers=layers, n_ctx=N_CTX, vocab_size=VOCAB, heads=4)
        out[(d, layers)] = llama if family == "llama" else plan(llama, family, "flops", top=1, heads=[1])[0]["config"]
    return out


def run_name(cfg: ModelConfig, lr: float, budget: float) -> str:
    return f"{cfg.family}-d{cfg.d_model}x{cfg.n_layers}-ctx{cfg.n_ctx}-lr{lr:g}-C{budget:.0e}"


def train(cfg: ModelConfig, lr: float, budget: float, data: Path, out: Path) -> Path:
    """One run (reused when it completed before); a diverged run stays as a result (its status: failed)."""
    name = run_name(cfg, lr, budget)
    if final_val_loss(out / "runs" / name) is None:
        print(f"{name}: {training_flops_per_token(cfg):.3g} FLOPs/token, "
              f"{param_counts(cfg)['non_embedding']:,} non-embedding params", flush=True)
        try:
            train_run(cfg, data, out / "runs", name, budget, batch=BATCH, lr=lr, evals=EVALS,
                      val_tokens=VAL_TOKENS, log=out / "logs" / f"{name}.log")
        except SystemExit as exc:
            if final_val_loss(out / "runs" / name) is None:
                raise
            print(f"  {name}: {exc}", flush=True)
    return out / "runs" / name


def lr_with_extensions(middle: ModelConfig, losses: dict[float, float], data: Path, out: Path,
                       done: list[dict]) -> float:
    """The mini-sweep (LR_SWEEP) of the middle shape; a best LR at an edge extends it by a factor 2
    beyond that edge, up to MAX_EXTENSIONS times (the protocol's rule, eval.protocol). Returns the best."""
    lrs = list(LR_SWEEP)
    for _ in range(MAX_EXTENSIONS + 1):
        for lr in lrs:
            if lr not in losses:
                run = train(middle, lr, LR_SWEEP_BUDGET, data, out)
                losses[lr] = final_val_loss(run)
                done.append({"stage": "lr", "cfg": middle, "lr": lr, "budget": LR_SWEEP_BUDGET, "dir": run})
        best = min(lrs, key=lambda lr: losses[lr] if math.isfinite(losses[lr]) else math.inf)
        if best not in (lrs[0], lrs[-1]) or len(lrs) == len(LR_SWEEP) + MAX_EXTENSIONS:
            return best
        lrs = lrs + [lrs[-1] * 2] if best == lrs[-1] else [lrs[0] / 2] + lrs
    return best


def sweep(out: Path) -> list[dict]:
    """Trains the mini-sweep, then the grid; returns the planned runs as (stage, cfg, lr, budget, dir)."""
    data = prep_corpus([str(shared_dir("data") / CORPUS)], out, VOCAB, val_fraction=0.05)
    done = []
    for family in ("llama", "mixer"):
        by_shape = shapes(family)
        middle = by_shape[MIDDLE]
        losses: dict[float, float] = {}
        best = lr_with_extensions(middle, losses, data, out, done)
        print(f"{family}: LR mini-sweep at d{middle.d_model}x{middle.n_layers} {losses} -> {best:g}", flush=True)
        for budget in BUDGETS:
            for cfg in by_shape.values():
                if cfg is middle and budget == LR_SWEEP_BUDGET:
                    continue  # the mini-sweep's run at the best LR is this point
                done.append({"stage": "isoflop", "cfg": cfg, "lr": best, "budget": budget,
                             "dir": train(cfg, best, budget, data, out)})
    return done


def csv_rows(done: list[dict]) -> list[dict]:
    """One row per validation point, in the lead's protocol CSV format (eval.protocol.CSV_FIELDS)."""
    rows = []
    for r in done:
        cfg, run = r["cfg"], r["dir"]
        dense, useful = training_flops_per_token(cfg), training_flops_per_token(cfg, useful=True)
        for m in rundir.read_metrics(run):
            if m.get("val_loss") is None:
                continue
            rows.append({"protocol": PROTOCOL, "stage": r["stage"], "label": cfg.family, "family": cfg.family,
                         "n_ctx": cfg.n_ctx, "lr": r["lr"], "seed": 0, "d_model": cfg.d_model,
                         "n_layers": cfg.n_layers, "heads": cfg.heads, "params": param_counts(cfg)["total"],
                         "flops_per_token": dense, "useful_flops_per_token": useful, "step": m["step"],
                         "tokens": m["tokens"], "flops": m["flops"], "flops_useful": m["flops"] * useful / dense,
                         "wall_s": m.get("wall_s"), "train_loss": m.get("train_loss"), "val_loss": m["val_loss"],
                         "val_bpb": m.get("val_bpb"), "budget_flops": r["budget"], "hardware": HARDWARE,
                         "run": run.name})
    return rows


def lr_sweep_notes(rows: list[dict]) -> tuple[dict[str, float], str]:
    """Each family's grid LR (the LR of its stage-"isoflop" runs) and the markdown of its mini-sweep."""
    grid = {r["family"]: float(r["lr"]) for r in rows if r["stage"] == "isoflop"}
    last: dict[str, dict] = {}  # run -> its final validation row
    for r in rows:
        if r["stage"] == "lr" and (r["run"] not in last or int(r["step"]) > int(last[r["run"]]["step"])):
            last[r["run"]] = r
    lines = [f"LR mini-sweep at the middle shape, {LR_SWEEP_BUDGET:.0e} FLOPs, final validation loss (an edge best "
             f"extends the sweep by a factor 2, at most {MAX_EXTENSIONS} times):", "",
             "| family | shape | LR: final loss | grid LR (every other run of the family) |", "|---|---|---|---|"]
    for family in sorted(grid):
        runs = [r for r in last.values() if r["family"] == family]
        sweep = sorted((float(r["lr"]), float(r["val_loss"])) for r in runs)
        best_lr = min(sweep, key=lambda t: t[1])[0]
        where = ("inside the sweep" if sweep[0][0] < best_lr < sweep[-1][0] else
                 "**at an edge of the extended sweep**: the family's best LR may lie beyond it")
        verdict = where if best_lr == grid[family] else f"**not the sweep's best ({best_lr:g})**"
        cells = ", ".join(f"{lr:g}: {loss:.4f}" for lr, loss in sweep)
        lines.append(f"| {family} | d{runs[0]['d_model']}x{runs[0]['n_layers']} | {cells} | {grid[family]:g}, {verdict} |")
    lines += ["", "Every fit below uses only the runs at their family's grid LR (one LR per family).", ""]
    return grid, "\n".join(lines)


def report() -> int:
    import csv
    from eval.isoflop import csv_points, report_from_points
    if not CSV.is_file():
        raise UserError(f"{CSV.relative_to(ROOT)}: missing; run scripts/isoflop_results.py (the sweep) first")
    with open(CSV, newline="") as fh:
        rows = list(csv.DictReader(fh))
    grid, notes = lr_sweep_notes(rows)
    points = [p for p in csv_points(CSV, "non_embedding") if p["lr"] == grid.get(p["family"])]
    header = ("<!-- generated by `python scripts/isoflop_results.py --report` from "
              "docs/results/data/isoflop-cpu.csv; do not edit -->\n\n")
    print(report_from_points(points, REPORT, "non_embedding", "best", header, notes))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--report", action="store_true", help="only recompute the report from the CSV")
    parser.add_argument("--out", default=str(ROOT / "runs" / "isoflop-cpu"), help="prep data and run directories")
    args = parser.parse_args(argv)
    if args.report:
        return run_cli(report)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    done = sweep(Path(args.out))
    rows = csv_rows(done)
    write_csv(rows, CSV)
    print(f"wrote {CSV.relative_to(ROOT)}: {len(rows)} rows from {len(done)} runs")
    return run_cli(report)


if __name__ == "__main__":
    sys.exit(main())
