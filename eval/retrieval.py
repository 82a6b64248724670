"""`python -m eval retrieval --run RUN [--run RUN2 ...] --pairs DIR --candidates 8,32,128 --out OUT`

Top-1 accuracy and MRR of retrieval on held-out (query, passage) pairs (`python -m data_prep pairs`) for
each run's embedding (a pretrained run, or one fine-tuned with the contrastive objective: cosine
similarity of `pretrain.models.sequence_embedding` embeddings), BM25 (`bm25s`, on the decoded text) and
random scores. Writes OUT/report.md, OUT/retrieval.csv and OUT/retrieval.png (top-1 against candidates).

Candidates follow the paper's convention: "n candidates" is a group of the query and n-1 passages (the
true one and n-2 distractors), so chance is 1/(n-1) (the paper's "top-1 of 32" has 31 passages). The
distractors of every query are drawn once with a fixed seed from the other held-out passages, and every
method is scored on those same sets. Ties count as a random tie-break (expected top-1 and reciprocal
rank), so a method that scores everything equal gets exactly chance, not 0 or 1.
"""
from __future__ import annotations

import argparse
import csv
import io
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_prep.pair_format import candidate_sets, rank_metrics
from stackcore.atomic import atomic_write_text
from stackcore.errors import UserError

CSV_COLUMNS = ["method", "run", "candidates", "passages", "top1", "mrr", "n_queries", "chance", "pool"]


class RetrievalError(UserError, ValueError):
    """Bad retrieval-eval input (pairs, candidates, runs); the message names it and the fix."""


@dataclass
class Method:
    """A scorer's full [queries, pool] score matrix; the candidate sets pick from it."""
    method: str
    run: str
    scores: np.ndarray


def parse_candidates(text: str) -> list[int]:
    try:
        values = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise RetrievalError(f"--candidates {text!r}: give integers, e.g. 8,32,128") from None
    if not values or values[0] < 3:
        raise RetrievalError(f"--candidates {text!r}: each n must be >= 3 (the query and >= 2 passages)")
    return values


def bm25_scores(queries: list[str], passages: list[str]) -> np.ndarray:
    """BM25 (bm25s defaults: Lucene variant, k1 1.5, b 0.75; English stopwords, no stemming) over the pool."""
    import bm25s

    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(passages, stopwords="en", show_progress=False), show_progress=False)
    query_terms = bm25s.tokenize(queries, stopwords="en", return_ids=False, show_progress=False)
    return np.stack([retriever.get_scores(terms) if terms else np.zeros(len(passages)) for terms in query_terms])


def run_scores(run: str, pairs, n_queries: int, pooling: str, batch: int, device: str) -> Method:
    """Cosine scores of a run's embeddings (queries against the whole pool)."""
    from eval.loss import load_checkpoint
    from pretrain.models.sequence_embedding import embed_texts

    config = Path(run) / "config.toml"
    if config.is_file() and _objective_of(config) == "retrieval":
        raise RetrievalError(f"{run}: a direct-embedding retrieval run (objective retrieval) scores its own "
                             "candidate groups (val_loss/val_top1 in its metrics.jsonl); pass its embedder run here")
    model, cfg = load_checkpoint(run)
    if cfg.model.vocab_size < pairs.manifest["vocab_size"]:
        raise RetrievalError(f"{run}: vocabulary {cfg.model.vocab_size} < the pairs' {pairs.manifest['vocab_size']}"
                             " (another tokenizer?); prep the pairs with the run's tokenizer")
    model.to(device)
    eos = pairs.manifest["eos_id"]
    queries = embed_texts(model, pairs.queries[:n_queries], eos, pooling, batch)
    passages = embed_texts(model, pairs.passages, eos, pooling, batch)
    table = getattr(cfg, "objective", None) or {}  # [objective] is a table: name + the objective's keys
    objective = table.get("name", "next_token") if isinstance(table, dict) else getattr(table, "name", "next_token")
    method = "embedding" if objective == "next_token" else objective
    return Method(method, Path(run).name, (queries @ passages.T).numpy())


def _objective_of(config: Path) -> str:
    from stackcore import rundir

    return str(rundir.read_config(config.parent).get("objective", {}).get("name", "next_token"))


def score_rows(methods: list[Method], candidates: list[int], pool: int, n_queries: int, seed: int) -> list[dict]:
    rows = []
    for n in candidates:
        if n - 1 > pool:
            continue
        sets, truth = candidate_sets(n_queries, pool, n, seed)
        for m in methods:
            top1, mrr = rank_metrics(np.take_along_axis(m.scores, sets, axis=1), truth)
            rows.append({"method": m.method, "run": m.run, "candidates": n, "passages": n - 1,
                         "top1": round(top1, 6), "mrr": round(mrr, 6), "n_queries": n_queries,
                         "chance": round(1 / (n - 1), 6), "pool": pool})
    return rows


def evaluate(runs: list[str], pairs_dir: str, candidates: list[int], split: str = "val", queries: int = 0,
             seed: int = 0, pooling: str = "last", batch: int = 32, device: str = "cpu", query_tokens: int = 0,
             passage_tokens: int = 0) -> tuple[list[dict], dict]:
    """(CSV rows, context for the report) of every method on the same fixed candidate sets."""
    from data_prep.pair_format import read_pairs
    from data_prep.tokenizer import load_tokenizer

    pairs = read_pairs(pairs_dir, split)
    if query_tokens or passage_tokens:  # every method sees the same cut texts (BM25 included)
        pairs.queries = [q[: query_tokens or None] for q in pairs.queries]
        pairs.passages = [p[: passage_tokens or None] for p in pairs.passages]
    pool = len(pairs)
    n_queries = min(queries or pool, pool)
    if pool < 3:
        raise RetrievalError(f"{pairs_dir}: split {split!r} holds {pool} pairs; retrieval needs >= 3 "
                             "(prep more text or raise --val-fraction)")
    enc = load_tokenizer(pairs.manifest["tokenizer_spec"])
    texts = [[enc.decode(t.tolist()) for t in part] for part in (pairs.queries[:n_queries], pairs.passages)]
    methods = [Method("random", "-", np.random.default_rng([seed, 1]).random((n_queries, pool))),
               Method("bm25", "-", bm25_scores(*texts))]
    methods += [run_scores(run, pairs, n_queries, pooling, batch, device) for run in runs]
    rows = score_rows(methods, candidates, pool, n_queries, seed)
    context = {"pairs": str(pairs_dir), "split": split, "pool": pool, "n_queries": n_queries, "seed": seed,
               "pooling": pooling, "fingerprint": pairs.manifest.get("fingerprint", "")[:12],
               "spec": pairs.manifest["pairs"], "skipped": [n for n in candidates if n - 1 > pool],
               "caps": (query_tokens, passage_tokens)}
    return rows, context


def _csv_text(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def report_markdown(rows: list[dict], context: dict) -> str:
    sizes = sorted({r["candidates"] for r in rows})
    labels = list(dict.fromkeys((r["method"], r["run"]) for r in rows))
    cell = {(r["method"], r["run"], r["candidates"]): r for r in rows}
    head = "| method | run | " + " | ".join(f"n={n}" for n in sizes) + " |"
    lines = ["# Retrieval: top-1 % (MRR) by candidates\n",
             f"Pairs `{context['pairs']}` ({context['spec']['query']} -> {context['spec']['passage']}, "
             f"fingerprint {context['fingerprint']}), split `{context['split']}`: {context['n_queries']} queries, "
             f"distractors from a pool of {context['pool']} passages, seed {context['seed']}, embedding pooling "
             f"`{context['pooling']}`, texts cut to (query, passage) tokens {context['caps']} (0: the window). n counts "
             "the query and n-1 passages (chance 1/(n-1)).\n",
             head, "|" + "---|" * (len(sizes) + 2)]
    for method, run in labels:
        cells = [f"{100 * cell[method, run, n]['top1']:.1f} ({cell[method, run, n]['mrr']:.3f})"
                 if (method, run, n) in cell else "" for n in sizes]
        lines.append(f"| {method} | {run} | " + " | ".join(cells) + " |")
    lines.append("| chance | | " + " | ".join(f"{100 / (n - 1):.1f} (ln {math.log(n - 1):.2f})" for n in sizes) + " |")
    if context["skipped"]:
        lines.append(f"\nNot scored: n = {context['skipped']} need more than the {context['pool']} held-out "
                     "passages.")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], out_png: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from eval.plots import save_figure

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for method, run in dict.fromkeys((r["method"], r["run"]) for r in rows):
        mine = sorted((r["candidates"], r["top1"]) for r in rows if (r["method"], r["run"]) == (method, run))
        ax.plot(*zip(*mine), marker="o", label=method if run == "-" else f"{method}: {run}")
    ax.set(xscale="log", xlabel="candidates n (query + n-1 passages)", ylabel="top-1 accuracy", ylim=(0, 1.02))
    ax.legend(fontsize=8)
    return save_figure(fig, out_png)


def write_outputs(rows: list[dict], context: dict, out: str | Path) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if not rows:
        raise RetrievalError(f"no candidate size fits the {context['pool']} held-out passages; pass smaller "
                             "--candidates or prep more pairs")
    atomic_write_text(out / "retrieval.csv", _csv_text(rows))
    plot(rows, out / "retrieval.png")
    atomic_write_text(out / "report.md", report_markdown(rows, context) + "\n![top-1](retrieval.png)\n")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval retrieval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", default=[], help="run dir, checkpoint or export (repeatable)")
    parser.add_argument("--pairs", required=True, help="a `python -m data_prep pairs` output directory")
    parser.add_argument("--candidates", default="8,32,128", help="group sizes n (query + n-1 passages)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument("--queries", type=int, default=0, help="score the first N pairs (0 = all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pooling", choices=("last", "mean"), default="last")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--query-tokens", type=int, default=0, help="cut queries to N tokens (0: n_ctx - 1)")
    parser.add_argument("--passage-tokens", type=int, default=0, help="cut passages to N tokens (0: n_ctx - 1); "
                        "match a contrastive run's objective.passage_tokens to score the texts it trained on")
    args = parser.parse_args(argv)
    try:
        rows, context = evaluate(args.run, args.pairs, parse_candidates(args.candidates), args.split,
                                 args.queries, args.seed, args.pooling, args.batch, args.device,
                                 args.query_tokens, args.passage_tokens)
        out = write_outputs(rows, context, args.out)
    except (UserError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report_markdown(rows, context))
    print(f"wrote {out / 'report.md'}, {out / 'retrieval.csv'}, {out / 'retrieval.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
