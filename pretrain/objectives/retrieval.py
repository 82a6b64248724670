"""retrieval: direct-embedding retrieval (the paper's retrieval A) on a frozen language model.

    --objective.name retrieval --objective.embedder RUN_DIR --data.path PAIRS_DIR --data.mode document
    [--objective.candidates 32] [--objective.layers 2] [--objective.pooling last|mean]
    (the run's [model] must be the embedder's: `--config RUN_DIR/config.toml` gives it)

The frozen embedder (a run directory, checkpoint or export of any family) embeds each query and passage
(`pretrain.models.sequence_embedding`: left padded to n_ctx, last-layer state at position -2 or the
mean, unit length over the feature axis so families with and without a final norm feed the head alike).
A group is n = `candidates` slots, [query, n-1 passages]: its own passage and n-2 distractors. An
unmasked slot mixer plus Linear(d, 1) (`pretrain.models.retrieval_head`) scores the n-1 candidate slots;
the loss is cross-entropy over them (chance: top-1 1/(n-1), CE ln(n-1), reported beside).

Training: a micro-batch of B >= n-1 pairs gives B groups, each query with n-2 distractors drawn from the
other passages of the micro-batch. Validation: the first val_queries held-out queries, distractors drawn
with a fixed seed from the held-out passages (`data_prep.pair_format.candidate_sets`, the sets
`eval retrieval` uses). A sample is one pair: two embedder forwards plus one group through the head.
"""
from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from pretrain.models.sequence_embedding import POOLINGS, embed_texts
from pretrain.objectives import register
from pretrain.objectives.base import Objective
from pretrain.objectives.contrastive import documents_from_rows, split_document, text_caps
from stackcore.config import ConfigError


@dataclass
class RetrievalOptions:
    embedder: str = ""  # run dir, checkpoint or export of the frozen language model (required)
    candidates: int = 32  # n slots: the query and n-1 passages (chance 1/(n-1))
    layers: int = 2  # slot-mixer blocks
    pooling: str = "last"
    val_queries: int = 256
    seed: int = 0  # of the fixed validation candidate sets
    passage_tokens: int = 0  # passage cap (0: n_ctx // 2), queries get the rest (contrastive.text_caps: WHY)


def load_embedder(source: str | Path):
    """(model, RunConfig) of a run dir / checkpoint / export: one loading path, as eval loss does."""
    from pretrain.export import WEIGHTS, export, load_model

    path = Path(source)
    if (path / WEIGHTS).is_file():
        return load_model(path)
    if not path.exists():
        raise ConfigError(f"objective.embedder={source}: no such run, checkpoint or export")
    with tempfile.TemporaryDirectory(prefix="retrieval-embedder-") as tmp:
        export(path, tmp)
        return load_model(tmp)


def embedder_model_table(source: str | Path) -> dict[str, Any]:
    from stackcore import rundir

    path = Path(source)
    run_dir = path if (path / rundir.CONFIG).is_file() else path.parent.parent
    if not (run_dir / rundir.CONFIG).is_file():
        raise ConfigError(f"objective.embedder={source}: no {rundir.CONFIG} in it or two levels up; pass a run "
                          "directory, a checkpoints/stepN directory or an export")
    return rundir.read_config(run_dir).get("model", {})


def model_differences(table: dict[str, Any], model_cfg) -> dict[str, tuple]:
    """{key: (embedder's, this run's)} for the [model] keys that differ, both read through the same typed
    config (so a TOML list and a tuple default compare equal)."""
    from dataclasses import fields

    from stackcore.config import from_dict
    theirs = from_dict(type(model_cfg), table)
    return {f.name: (getattr(theirs, f.name), getattr(model_cfg, f.name)) for f in fields(model_cfg)
            if getattr(theirs, f.name) != getattr(model_cfg, f.name)}


@register
class Retrieval(Objective):
    name = "retrieval"
    Options = RetrievalOptions
    data_modes = ("document",)

    def check(self) -> None:
        super().check()
        o, mb = self.options, self.cfg.train.micro_batch
        if not o.embedder:
            raise ConfigError("objective.embedder is required: the run whose language model embeds the texts")
        if o.candidates < 3 or mb < o.candidates - 1:
            raise ConfigError(f"objective.candidates={o.candidates}: must be >= 3 and train.micro_batch={mb} "
                              f">= candidates - 1 (distractors come from the micro-batch)")
        if o.pooling not in POOLINGS:
            raise ConfigError(f"objective.pooling must be one of {list(POOLINGS)}, got {o.pooling!r}")
        text_caps(self.cfg.model.n_ctx, o.passage_tokens)
        differs = model_differences(embedder_model_table(o.embedder), self.cfg.model)
        if differs:
            raise ConfigError(f"[model] differs from the embedder's (embedder, this run): {differs}; start from "
                              f"its config (--config {o.embedder}/config.toml)")
        from data_prep.pair_format import pairs_manifest
        self.eos = int(pairs_manifest(self.cfg.data.path)["eos_id"])

    def build_model(self) -> torch.nn.Module:
        from pretrain.models.retrieval_head import RetrievalModel, SlotScorer

        embedder, _ = load_embedder(self.options.embedder)
        scorer = SlotScorer(self.options.candidates, self.cfg.model.d_model, self.options.layers,
                            self.cfg.model.ffn_mult)
        self.model = RetrievalModel(embedder, scorer)
        return self.model

    def flops_per_sample(self, model_cfg=None) -> float:
        from pretrain.models.flops import forward_flops_per_token
        from pretrain.models.retrieval_head import SlotScorer

        cfg, o = model_cfg or self.cfg.model, self.options
        head = SlotScorer(o.candidates, cfg.d_model, o.layers, cfg.ffn_mult).forward_flops(cfg.d_model, cfg.ffn_mult)
        return 2 * forward_flops_per_token(cfg, cfg.n_ctx) * cfg.n_ctx + 3 * head

    def tokens_per_sample(self) -> int:
        return 2 * self.cfg.model.n_ctx

    def _embed(self, texts: list) -> torch.Tensor:
        embedder = self.model.embedder
        return embed_texts(embedder, texts, self.eos, self.options.pooling, batch=64)

    def batch(self, raw: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(raw, list):  # validation items: (slots [n, d], position of the true passage)
            return torch.stack([s for s, _ in raw]).to(device), torch.tensor([t for _, t in raw], device=device)
        caps = text_caps(self.cfg.model.n_ctx, self.options.passage_tokens)
        split = [split_document(doc, self.eos, *caps) for doc in documents_from_rows(*raw)]
        queries, passages = self._embed([q for q, _ in split]), self._embed([p for _, p in split])
        return self.training_groups(queries, passages, self.options.candidates, device)

    @staticmethod
    def training_groups(queries: torch.Tensor, passages: torch.Tensor, n: int, device) -> tuple[torch.Tensor, ...]:
        """One group per query: its passage and n-2 others of the batch, in a random order."""
        b = len(queries)
        slots, targets = [], []
        for j in range(b):
            others = torch.randperm(b - 1)[: n - 2]
            others += (others >= j).long()
            order = torch.randperm(n - 1)
            cands = torch.cat([torch.tensor([j]), others])[order]
            slots.append(torch.cat([queries[j:j + 1], passages[cands]]))
            targets.append(int((order == 0).nonzero()))
        return torch.stack(slots).to(device), torch.tensor(targets, device=device)

    def loss(self, model, batch) -> tuple[torch.Tensor, int]:
        slots, targets = batch
        return F.cross_entropy(model(slots).float(), targets), len(targets)

    def validation_set(self, manifest: dict[str, Any]):
        from data_prep.pair_format import candidate_sets, read_pairs

        pairs, n = read_pairs(self.cfg.data.path, "val"), self.options.candidates
        if len(pairs) < n - 1:
            raise ConfigError(f"{self.cfg.data.path}: {len(pairs)} held-out pairs, fewer than the {n - 1} "
                              "passages of a group; lower objective.candidates or prep with a larger --val-fraction")
        q_cap, p_cap = text_caps(self.cfg.model.n_ctx, self.options.passage_tokens)  # as training sees them
        queries = self._embed([q[:q_cap].tolist() for q in pairs.queries[: self.options.val_queries]])
        passages = self._embed([p[:p_cap].tolist() for p in pairs.passages])
        sets, truth = candidate_sets(len(queries), len(passages), n, self.options.seed)
        return [(torch.cat([queries[i:i + 1], passages[torch.as_tensor(sets[i])]]), int(truth[i]))
                for i in range(len(queries))]

    def eval_items(self, val, max_tokens: int = 0):
        return val[: max(1, math.ceil(max_tokens / self.tokens_per_sample()))] if max_tokens else val

    def eval_sums(self, model, batch) -> dict[str, float]:
        slots, targets = batch
        logits = model(slots).float()
        return {"nats": float(F.cross_entropy(logits, targets, reduction="sum")),
                "correct": int((logits.argmax(-1) == targets).sum()), "queries": len(targets)}

    def sum_keys(self) -> list[str]:
        return ["nats", "correct", "queries"]

    def metrics(self, sums: dict[str, float], val) -> dict[str, Any]:
        n, queries = self.options.candidates, max(int(sums.get("queries", 0)), 1)
        return {"val_loss": sums.get("nats", 0.0) / queries, "val_top1": sums.get("correct", 0) / queries,
                "val_queries": int(sums.get("queries", 0)), "val_candidates": n,
                "val_chance": 1 / (n - 1), "val_chance_ce": math.log(n - 1)}
