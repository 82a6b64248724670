"""Pair shards as retrieval reads them (the contract beside data_prep/format.py; numpy only, no torch).

A pairs directory (`python -m data_prep pairs`) is an ordinary prep directory whose manifest has a `pairs`
section and whose every document is `query EOS passage EOS`. `read_pairs` returns the token arrays of a
split; `candidate_sets` draws, with a fixed seed, the candidates every retrieval method is scored on;
`rank_metrics` scores them (top-1 and MRR, ties broken at random in expectation). Training objectives
(pretrain.objectives.contrastive / retrieval) and `python -m eval retrieval` share these three.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_prep.format import FormatError, decode_sample, read_manifest, shard_paths

LAYOUT = "query EOS passage EOS"


@dataclass
class Pairs:
    """Token arrays of one split: queries[i] and passages[i] form pair i (EOS not included)."""
    queries: list[np.ndarray]
    passages: list[np.ndarray]
    manifest: dict

    def __len__(self) -> int:
        return len(self.queries)


def split_pair(doc: np.ndarray, eos: int, where: str = "") -> tuple[np.ndarray, np.ndarray]:
    """(query, passage) of one `query EOS passage EOS` document."""
    cut = np.flatnonzero(doc == eos)
    if len(cut) != 2 or cut[1] != len(doc) - 1:
        raise FormatError(f"{where}: a pair document holds {len(cut)} EOS (want 2: {LAYOUT}); re-run "
                          "`python -m data_prep pairs` into a new --out")
    return doc[:cut[0]].astype(np.int64), doc[cut[0] + 1:-1].astype(np.int64)


def pairs_manifest(prep_dir: str | Path) -> dict:
    """The manifest of a pairs directory; FormatError naming the fix for a plain text prep."""
    manifest = read_manifest(prep_dir)
    if "pairs" not in manifest:
        raise FormatError(f"{Path(prep_dir) / 'manifest.json'}: not a pairs directory (no `pairs` section); "
                          "make one with `python -m data_prep pairs --input ... --out DIR`")
    return manifest


def read_pairs(prep_dir: str | Path, split: str = "val", limit: int = 0) -> Pairs:
    """The pairs of `split` in manifest order (the first `limit` if > 0)."""
    from data_prep.inspect_shards import iter_samples

    manifest = pairs_manifest(prep_dir)
    out = Pairs([], [], manifest)
    for path in shard_paths(prep_dir, manifest, split):
        for key, sample in iter_samples(path):
            tokens, lengths = decode_sample(sample, manifest["dtype"], where=f"{path.name}:{key}")
            for doc in np.split(tokens, np.cumsum(lengths)[:-1]):
                query, passage = split_pair(doc, manifest["eos_id"], f"{path.name}:{key}")
                out.queries.append(query)
                out.passages.append(passage)
                if limit and len(out) >= limit:
                    return out
    return out


def candidate_sets(n_queries: int, pool: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(passage indices [Q, n-1], position of the true passage [Q]) for groups of n = query + n-1
    passages; query i's true passage is i, its n-2 distractors are other passages of the pool."""
    if not 3 <= n <= pool + 1 or n_queries > pool:
        raise ValueError(f"groups of n={n} need 3 <= n <= pool+1 and queries <= pool (pool {pool}, "
                         f"queries {n_queries})")
    rng = np.random.default_rng([seed, n])
    sets = np.empty((n_queries, n - 1), dtype=np.int64)
    truth = np.empty(n_queries, dtype=np.int64)
    for i in range(n_queries):
        others = rng.choice(pool - 1, size=n - 2, replace=False)
        others += others >= i  # skip the query's own passage
        order = rng.permutation(n - 1)
        sets[i] = np.concatenate([[i], others])[order]
        truth[i] = int(np.flatnonzero(order == 0)[0])
    return sets, truth


def rank_metrics(scores: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """(top-1, MRR) of [Q, m] scores where truth[q] is the right column; ties broken uniformly at random
    (in expectation), so equal scores give exactly chance, never 0 or 1."""
    true = scores[np.arange(len(truth)), truth][:, None]
    greater = (scores > true).sum(1)
    ties = (scores == true).sum(1) - 1
    harmonic = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, scores.shape[1] + 1))])
    top1 = np.where(greater == 0, 1.0 / (ties + 1), 0.0)
    mrr = (harmonic[greater + ties + 1] - harmonic[greater]) / (ties + 1)
    return float(top1.mean()), float(mrr.mean())
