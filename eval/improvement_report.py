"""`python -m eval.improvement_report --config configs/protocol/improve-screen.toml [--data CSV]
--doc docs/results/improvement.md`: the improvement study's variant table (issue 15), recomputed from
the protocol config (shapes, parameters, FLOPs) and the committed CSV (`eval.protocol export`) alone.

The table replaces the part of the doc between its `<!-- BLOCK:begin -->` and `<!-- BLOCK:end -->`
markers (`--block`: `variant-table` by default, `study-512` and `study-enwiki` for the study, so one
doc holds several tables; the hand-written discussion around them stays); the plot of
validation loss against FLOPs for the Llama, the flat mixer and the best two variants goes beside the
doc. A shape with no finished run says "not run". Deterministic: a second run changes nothing.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from eval.labels import REFERENCE
from stackcore.atomic import atomic_write_text
from stackcore.errors import UserError, run_cli

DEFAULT_BLOCK = "variant-table"
BASELINE = "mixer"

# One line per screened shape: why it might beat the flat mixer per FLOP at n_ctx 512.
HYPOTHESES = {
    "llama": "the reference: LR-tuned Llama (RoPE attention, SwiGLU, RMSNorm)",
    "mixer": "the baseline: the flat masked mixer as cpu-ctx runs it",
    "mixer-heads4": "4 heads mix d/4 features each with their own matrix: more mixing patterns per FLOP (the paper's multi-head mixer)",
    "mixer-exp1": "expansion 1 adds a second mixing stage with a GELU between: nonlinear token mixing, at the cost of width",
    "mixer-runmean": "starting every row as the causal mean gives a useful bag-of-words mixing from step 0 instead of noise, which short budgets cannot undo",
    "mixer-rows": "rows that sum to one keep each layer's output on the scale of its input at every position (the uniform init's row sums grow as sqrt(i)), without the softmax's all-positive weights",
    "mixer-decay": "one learned factor per distance shares a recency prior across all rows, which a full matrix learns row by row from few examples",
    "mixer-gate": "a data-dependent gate lets a token choose how much of the fixed mixing it takes: some of attention's input dependence for 2d^2 FLOPs",
    "mixer-toeplitz": "Toeplitz mixing by FFT costs O(T log T): at n_ctx 512 the FLOPs saved buy width (and shift-invariance is a prior language has)",
    "mixer-hybrid": "one attention layer supplies content-based lookup (copying names) that fixed mixing lacks; the mixer layer stays cheap",
    "mixer-wide1": "mixing FLOPs grow with n_ctx, FFN FLOPs with d: one wide layer spends the budget on features instead of on mixing twice",
    "mixer-combo": "the screen's three independent winners (Toeplitz by FFT, 4 heads, the output gate) should stack: cheaper mixing buys width, heads and the gate add mixing patterns and input dependence",
    "mixer-deep4": "the paper's mixers are deep: four narrow layers compose mixing steps at the same FLOPs",
}


def planned_shapes(config: Path) -> list[dict]:
    """label -> shape, params and FLOPs per token at each n_ctx, from the protocol config alone."""
    from eval.protocol import load_protocol, model_config
    from pretrain.models.flops import param_counts, training_flops_per_token

    proto = load_protocol(config)
    rows = []
    for n_ctx in proto.protocol.n_ctx:
        for shape in proto.shapes:
            cfg = model_config(proto, shape, n_ctx)
            rows.append({"label": shape.label, "n_ctx": n_ctx, "options": shape.options,
                         "shape": f"d{cfg.d_model}x{cfg.n_layers} h{cfg.heads}",
                         "params": param_counts(cfg)["total"], "dense": training_flops_per_token(cfg),
                         "useful": training_flops_per_token(cfg, useful=True)})
    return rows


def results(data: Path | None) -> tuple[dict, dict, dict]:
    """(runs, best LR per key, tuned runs per key) from the CSV; empty when there is none yet."""
    from eval import protocol_report as R

    if data is None or not data.is_file():
        return {}, {}, {}
    runs = R.curves(R.read_rows([data]))
    best = R.best_lrs(runs)
    return runs, best, R.tuned_runs(runs, best)


def table(shapes: list[dict], best: dict, tuned: dict, protocol: str) -> str:
    from eval import protocol_report as R
    from eval.curves import mean_spread

    lines = ["| n_ctx | variant | options | hypothesis | shape | params | FLOPs/token dense (useful) | LRs run "
             "| best LR | runs at best LR | val loss at budget, mean [min-max] | multiplier vs Llama, dense "
             "| multiplier, useful | multiplier vs flat mixer, dense |", "|" + "---|" * 14]
    for s in shapes:
        key = (protocol, s["n_ctx"], s["label"])
        runs, ref = tuned.get(key, []), tuned.get((protocol, s["n_ctx"], REFERENCE), [])
        flat = tuned.get((protocol, s["n_ctx"], BASELINE), [])
        options = ", ".join(f"{k}={v}" for k, v in sorted(s["options"].items())) or "-"
        head = (f"| {s['n_ctx']} | {s['label']} | {options} | {HYPOTHESES.get(s['label'], '')} | {s['shape']} "
                f"| {s['params']:,} | {s['dense']:.3g} ({s['useful']:.3g}) |")
        if not runs:
            lines.append(head + " - | not run | | | | | |")
            continue
        b = best[key]
        edge = "" if b["where"] == "inside" else f" ({b['where']})"
        loss = R.fmt_spread(mean_spread([c["final"] for c in runs]))
        if s["label"] == REFERENCE or not ref:
            m_dense = m_useful = "reference" if s["label"] == REFERENCE else "no Llama run"
        else:
            m_dense = R.fmt_spread(R.multiplier(runs, ref, "x"), 2, "x")
            m_useful = R.fmt_spread(R.multiplier(runs, ref, "xu"), 2, "x")
        m_flat = ("baseline" if s["label"] == BASELINE else "-" if s["label"] == REFERENCE or not flat
                  else R.fmt_spread(R.multiplier(runs, flat, "x"), 2, "x"))
        lrs = ", ".join(f"{lr:g}" for lr in sorted(b["sweep"]))
        lines.append(head + f" {lrs} | {b['lr']:g}{edge} | {len(runs)} | {loss} | {m_dense} | {m_useful} | {m_flat} |")
    return "\n".join(lines)


def best_two(tuned: dict, protocol: str, n_ctx: int) -> list[str]:
    """The two variants (not the Llama, not the flat mixer) with the lowest mean final loss."""
    scored = [(sum(c["final"] for c in runs) / len(runs), key[2]) for key, runs in tuned.items()
              if key[0] == protocol and key[1] == n_ctx and key[2] not in (REFERENCE, BASELINE)]
    return [label for _, label in sorted(scored)[:2]]


def plot(tuned: dict, protocol: str, n_ctx: int, labels: list[str], out_png: Path) -> Path:
    from eval.plots import save_figure  # first: it selects the Agg backend
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for label in labels:
        for i, c in enumerate(tuned.get((protocol, n_ctx, label), [])):
            ax.plot(c["x"], c["y"], marker=".", lw=1.2, color=f"C{labels.index(label)}",
                    label=f"{label} (lr {c['lr']:g})" if i == 0 else None)
    ax.set_xscale("log")
    ax.set_xlabel("training FLOPs (dense)")
    ax.set_ylabel("validation loss (nats/token)")
    ax.set_title(f"{protocol}, n_ctx {n_ctx}: each at its best LR", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, out_png, dpi=100)


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def update_doc(doc: Path, block: str, name: str = DEFAULT_BLOCK) -> None:
    begin, end = markers(name)
    text = doc.read_text() if doc.is_file() else ""
    if begin not in text or end not in text or text.index(begin) > text.index(end):
        raise UserError(f"{doc}: needs the markers {begin} and {end} (the generated table goes between them)")
    head, rest = text.split(begin, 1)
    tail = rest.split(end, 1)[1]
    atomic_write_text(doc, f"{head}{begin}\n{block}\n{end}{tail}")


def report(config: Path, data: Path | None, doc: Path, name: str = DEFAULT_BLOCK) -> str:
    from eval.protocol import load_protocol

    protocol = load_protocol(config).protocol.name
    shapes = planned_shapes(config)
    _, best, tuned = results(data)
    parts = [f"<!-- generated by `python -m eval.improvement_report --config {config.as_posix()}"
             f"{f' --data {data.as_posix()}' if data else ''} --doc {doc.as_posix()}"
             f"{f' --block {name}' if name != DEFAULT_BLOCK else ''}`; do not edit -->",
             table(shapes, best, tuned, protocol)]
    for n_ctx in sorted({s["n_ctx"] for s in shapes}):
        top = best_two(tuned, protocol, n_ctx)
        if top:
            png = plot(tuned, protocol, n_ctx, [REFERENCE, BASELINE, *top], doc.with_name(f"{protocol}-{n_ctx}.png"))
            parts.append(f"\n![loss against FLOPs, n_ctx {n_ctx}]({png.name})\n\nBest two variants at n_ctx "
                         f"{n_ctx} by final loss: {', '.join(top)}.")
    block = "\n".join(parts)
    update_doc(doc, block, name)
    return block


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.improvement_report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="the protocol TOML whose shapes the table lists")
    parser.add_argument("--data", default=None, help="its exported CSV (absent: every row says 'not run')")
    parser.add_argument("--doc", required=True, help="the markdown file holding the table markers")
    parser.add_argument("--block", default=DEFAULT_BLOCK, help="the marker name: <!-- BLOCK:begin --> ... "
                        "<!-- BLOCK:end --> (default %(default)s)")
    args = parser.parse_args(argv)
    return run_cli(lambda: print(report(Path(args.config), Path(args.data) if args.data else None, Path(args.doc),
                                        args.block)))


if __name__ == "__main__":
    sys.exit(main())
