"""`python -m eval representation (--run RUN_DIR | --config FILE --untrained)...`: input-representation
accuracy (the modified Hamming metric, eval.hamming) per block depth, on real held-out text.

Several --run/--config may be given; each becomes a row group of the table and a line of the plot.
Held-out text: N windows of n_ctx tokens from the validation split of a prep directory (--data, default
the run's data.path), packed as the loader packs them (documents end with EOS; no padding), or a plain
text file (--text) encoded with the run's tokenizer. Writes representation.json, report.md and
representation.png to --out. Every row carries the inversion's final L1, its ratio to the start L1 and
whether the descent converged (eval.hamming.Convergence); `--until-converged` runs on after the
published schedule (at its last step size) until it does or `--max-steps`.
"""
from __future__ import annotations

import argparse
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from data_prep.format import decode_sample, read_manifest, shard_paths
from eval.hamming import TOP_K, Convergence, hamming_by_depth
from stackcore.atomic import atomic_write_bytes, atomic_write_json

# Step size of the plain gradient descent on a summed L1, one for every family: chosen so the untrained
# mixer, llama and gpt converge within 500 steps at the shapes used here; override with --lr.
DEFAULT_LR = 0.05
PUBLISHED = "untrained mixers h ~ 0, untrained transformers h ~ 1; trained mixers below trained transformers"


def heldout_windows(prep_dir: str | Path, n_ctx: int, n: int, split: str = "val") -> torch.Tensor:
    """The first n windows of n_ctx tokens of a split (documents packed in manifest order)."""
    manifest = read_manifest(prep_dir)
    need = n * n_ctx
    chunks: list[np.ndarray] = []
    have = 0
    for path in shard_paths(prep_dir, manifest, split):
        members: dict[str, dict[str, bytes]] = {}
        with tarfile.open(path) as tar:
            for info in tar:
                if info.isfile():
                    key, _, ext = info.name.partition(".")
                    members.setdefault(key, {})[ext] = tar.extractfile(info).read()
        for key in sorted(members):
            tokens, _ = decode_sample(members[key], manifest["dtype"], f"{path}:{key}")
            chunks.append(tokens.astype(np.int64))
            have += len(tokens)
            if have >= need:
                break
        if have >= need:
            break
    if have < need:
        raise SystemExit(f"{prep_dir}: the {split} split holds {have} tokens, fewer than {n} x {n_ctx}; "
                         "lower --samples or prep more validation data (--val-fraction)")
    return torch.from_numpy(np.concatenate(chunks)[:need].reshape(n, n_ctx))


def text_windows(text_file: str | Path, enc, n_ctx: int, n: int) -> torch.Tensor:
    ids = enc.encode_ordinary(Path(text_file).read_text(encoding="utf-8", errors="replace"))
    if len(ids) < n * n_ctx:
        raise SystemExit(f"{text_file}: {len(ids)} tokens, fewer than {n} x {n_ctx}; lower --samples")
    return torch.tensor(ids[:n * n_ctx]).view(n, n_ctx)


def load_subject(spec: tuple[str, str], overrides: list[str]):
    """(label, model, RunConfig) of ('run', path) or ('config', file) (untrained, seeded by run.seed)."""
    from pretrain.config import RunConfig
    from pretrain.models import build_model
    from stackcore.config import load_config

    kind, path = spec
    if kind == "run":
        from pretrain.generate import load_run_model
        model, cfg = load_run_model(path)
        return f"{cfg.run.name} (trained)", model, cfg
    cfg = load_config(RunConfig, path, overrides)
    torch.manual_seed(cfg.run.seed)
    return f"{cfg.run.name} (untrained)", build_model(cfg.model), cfg


def _summary_rows(label: str, cfg, results) -> list[dict[str, Any]]:
    m = cfg.model
    return [{"model": label, "family": m.family, "shape": f"d{m.d_model}x{m.n_layers}", "depth": r.depth,
             "h_mean": r.mean, "h_std": r.std, "h_min": min(r.per_sample), "h_max": max(r.per_sample),
             "samples": len(r.per_sample), "start_l1": r.start_l1, "final_l1": r.final_l1,
             "l1_ratio": r.l1_ratio, "steps_run": r.steps_run, "converged": r.converged,
             "per_sample": r.per_sample, **_schedule_fields(r)}
            for r in results]


def _schedule_fields(r) -> dict[str, Any]:
    """The published schedule's end point of a descent that ran on (absent otherwise)."""
    if r.schedule_per_sample is None:
        return {}
    return {"h_schedule_mean": sum(r.schedule_per_sample) / len(r.schedule_per_sample),
            "schedule_converged": r.schedule_converged}


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "**no**"


def report_markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    extended = all("h_schedule_mean" in r for r in rows) and meta.get("max_steps", 0) > meta["steps"]
    lines = [f"Modified Hamming metric h (fraction of positions whose token is not in the top-{TOP_K} "
             f"decoded via pinv(W_emb)); {meta['samples']} windows of held-out text, {meta['steps']} steps. "
             f"Chance for vocab V is 1 - {TOP_K}/V. Published: {PUBLISHED}."
             + (" Start and step size scaled to std(W_emb) (not the published protocol)."
                if meta.get("scale_to_embedding") else ""), "",
             f"Converged: over the last {meta['window']} steps the L1 fell by less than {meta['tol']:g} of "
             "its value and of its fall since the start (eval.hamming.Convergence); "
             + (f"the descent ran on at lr/10 after the schedule until converged or {meta['max_steps']} steps. "
                if extended else "the published fixed schedule, not extended. ")
             + "**Only converged rows measure the model**: in a row marked *no* the optimiser ran out of "
             "steps, and its h may still change with more of them.", "",
             "| model | family | shape | depth | h mean | h std | h min..max | final L1 | L1 final/start "
             "| steps | converged |" + (f" h after {meta['steps']} steps (converged then?) |" if extended else ""),
             "|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if extended else "")]
    for r in rows:
        lines.append(f"| {r['model']} | {r['family']} | {r['shape']} | {r['depth']} | {r['h_mean']:.3f} "
                     f"| {r['h_std']:.3f} | {r['h_min']:.3f}..{r['h_max']:.3f} | {r['final_l1']:.4f} "
                     f"| {r['l1_ratio']:.4f} | {r['steps_run']} | {_yes_no(r['converged'])} |"
                     + (f" {r['h_schedule_mean']:.3f} ({_yes_no(r['schedule_converged'])}) |" if extended else ""))
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], out_png: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from eval.plots import family_line_style, save_figure

    fig, ax = plt.subplots(figsize=(7, 4.5))
    markers = "osD^vx*P"
    ringed = False
    for i, label in enumerate(dict.fromkeys(r["model"] for r in rows)):
        pts = [r for r in rows if r["model"] == label]
        style = family_line_style(pts[0]["family"])
        ax.errorbar([r["depth"] for r in pts], [r["h_mean"] for r in pts], yerr=[r["h_std"] for r in pts],
                    label=label, linestyle=style, marker=markers[i % len(markers)], capsize=3,
                    alpha=0.8, markersize=8 - i)  # shrinking markers: equal curves (h = 0) stay visible
        loose = [r for r in pts if not r.get("converged", True)]
        if loose:  # a descent that did not converge: its h measures the optimiser, ring it
            ax.plot([r["depth"] for r in loose], [r["h_mean"] for r in loose], "o", markersize=16,
                    markerfacecolor="none", markeredgecolor="k", label=None if ringed else "not converged")
            ringed = True
    ax.set_xlabel("blocks before the target (depth)")
    ax.set_ylabel("h (lower = input more recoverable)")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title("Input-representation accuracy")
    ax.legend(fontsize=8)
    save_figure(fig, out_png)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m eval representation", description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", action="append", default=[], help="a trained run directory or export (repeatable)")
    ap.add_argument("--config", action="append", default=[], help="a run config, with --untrained (repeatable)")
    ap.add_argument("--untrained", action="store_true", help="measure the freshly initialised model of --config")
    ap.add_argument("--data", help="prep directory whose val split supplies the text (default: run's data.path)")
    ap.add_argument("--text", help="a plain-text file instead of --data (encoded with --tokenizer)")
    ap.add_argument("--tokenizer", help="tokenizer name or file for --text (default: the data manifest's)")
    ap.add_argument("--samples", type=int, default=8, help="windows of n_ctx tokens (N)")
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--lr", type=float, help=f"step size (default {DEFAULT_LR})")
    ap.add_argument("--depths", default="all", help="'all' (1..n_layers), 'last', or e.g. '1,2,4'")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scale-to-embedding", action="store_true",
                    help="start from N(0, std(W_emb)^2) and scale the step size by std(W_emb) (not the "
                         "published protocol: removes its dependence on the embedding init scale)")
    ap.add_argument("--until-converged", action="store_true",
                    help="after the --steps schedule, continue at its last step size until the L1 converged "
                         "(or --max-steps)")
    ap.add_argument("--max-steps", type=int, default=0, help="cap with --until-converged (default 10 x --steps)")
    ap.add_argument("--conv-window", type=int, default=Convergence.window, help="steps per convergence window")
    ap.add_argument("--conv-tol", type=float, default=Convergence.tol, help="relative L1 fall counted as none")
    ap.add_argument("--out", default="reports/representation")
    return ap


def main(argv: list[str] | None = None) -> int:
    args, overrides = build_parser().parse_known_args(argv)
    if args.config and not args.untrained:
        raise SystemExit("--config measures an untrained model: add --untrained (or pass a trained --run)")
    max_steps = (args.max_steps or 10 * args.steps) if args.until_converged else 0
    if args.until_converged and max_steps <= args.steps:
        raise SystemExit(f"--max-steps {max_steps} must exceed --steps {args.steps} to run on until converged")
    convergence = Convergence(window=args.conv_window, tol=args.conv_tol, max_steps=max_steps)
    subjects = [("run", p) for p in args.run] + [("config", p) for p in args.config]
    if not subjects:
        raise SystemExit("nothing to measure: pass --run RUN_DIR or --config FILE --untrained")
    rows: list[dict[str, Any]] = []
    for spec in subjects:
        label, model, cfg = load_subject(spec, overrides)
        n_ctx = cfg.model.n_ctx
        if args.text:
            from pretrain.generate import run_tokenizer
            ids = text_windows(args.text, run_tokenizer(cfg, args.tokenizer), n_ctx, args.samples)
        else:
            data = args.data or cfg.data.path
            if not data:
                raise SystemExit(f"{spec[1]}: no data.path in its config; pass --data PREP_DIR or --text FILE")
            ids = heldout_windows(data, n_ctx, args.samples)
        if int(ids.max()) >= cfg.model.vocab_size:
            raise SystemExit(f"token id {int(ids.max())} >= model.vocab_size={cfg.model.vocab_size}: the text's "
                             "tokenizer does not match the model; pass the run's data or --tokenizer")
        n = cfg.model.n_layers
        depths = (list(range(1, n + 1)) if args.depths == "all" else [n] if args.depths == "last"
                  else [int(k) for k in args.depths.split(",")])
        lr = args.lr or DEFAULT_LR
        results = hamming_by_depth(model, ids, depths, progress=lambda d: tqdm(d, desc=label, unit="depth"),
                                   steps=args.steps, lr=lr, seed=args.seed,
                                   scale_to_embedding=args.scale_to_embedding, convergence=convergence)
        rows += [{**r, "lr": lr} for r in _summary_rows(label, cfg, results)]
    meta = {"samples": args.samples, "steps": args.steps, "seed": args.seed, "top_k": TOP_K,
            "scale_to_embedding": args.scale_to_embedding, "max_steps": max_steps, "window": args.conv_window,
            "tol": args.conv_tol}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "representation.json", {**meta, "rows": rows})
    text = report_markdown(rows, meta)
    atomic_write_bytes(out / "report.md", ("# Input-representation accuracy\n\n" + text).encode())
    plot(rows, out / "representation.png")
    print(text)
    print(f"wrote {out}/report.md, representation.json, representation.png")
    return 0
