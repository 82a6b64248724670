"""contrastive: InfoNCE fine-tuning of a causal LM on (query, passage) pairs (the paper's retrieval B).

    --objective.name contrastive --data.path PAIRS_DIR --data.mode document --init.from PRETRAINED_RUN
    [--objective.group 31] [--objective.temperature 0.02] [--objective.pooling last|mean]

Data: a `python -m data_prep pairs` directory; the loader yields each pair document `query EOS passage
EOS` cut at model.n_ctx + 1 tokens (document mode), and this objective splits it at the first EOS, so in
training query and passage share that window (a passage loses what a long query takes; `eval retrieval`
embeds each text with its own window). Each text is LEFT padded to n_ctx and embedded by
`pretrain.models.sequence_embedding` (last-layer state at position -2, or the mean), normalised over the
feature axis.

A micro-batch holds micro_batch / group groups of `group` pairs; every query of a group is scored
(cosine / temperature) against the group's `group` passages and trained with cross-entropy towards its own:
each query faces 1 query + `group` passages, the paper's "top-1 of 32" at group 31. A sample is one pair:
two sequences forward and backward (FLOPs: 2 x the family's n_ctx-sequence cost, lm_head included though
unused, so equal budgets stay comparable across families). Validation: the first val_pairs held-out
pairs in fixed groups; val_loss (InfoNCE nats per query), val_top1 (chance 1/group).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from pretrain.models.sequence_embedding import POOLINGS, embed_sequences, left_pad, text_mask
from pretrain.objectives import register
from pretrain.objectives.base import Objective
from stackcore.config import ConfigError

IGNORE_INDEX = -100


def info_nce(queries: torch.Tensor, passages: torch.Tensor, group: int, temperature: float,
             reduction: str = "mean") -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, scores [G, group, group]) for normalised embeddings [G*group, d] in group order: query i of
    a group against the group's passages, target its own passage (the diagonal)."""
    d = queries.size(-1)
    scores = torch.einsum("gid,gjd->gij", queries.view(-1, group, d), passages.view(-1, group, d)) / temperature
    targets = torch.arange(group, device=scores.device).repeat(scores.size(0))
    return F.cross_entropy(scores.reshape(-1, group).float(), targets, reduction=reduction), scores


def documents_from_rows(inputs: torch.Tensor, labels: torch.Tensor) -> list[list[int]]:
    """The (cut) documents of document-mode rows: the inputs at target positions plus the last target."""
    docs = []
    for row_in, row_lab in zip(inputs.tolist(), labels.tolist()):
        kept = [i for i, lab in enumerate(row_lab) if lab != IGNORE_INDEX]
        docs.append([row_in[i] for i in kept] + [row_lab[kept[-1]]] if kept else [])
    return docs


def split_document(doc: list[int], eos: int, query_tokens: int = 0,
                   passage_tokens: int = 0) -> tuple[list[int], list[int]]:
    """(query, passage) of a possibly cut `query EOS passage EOS` document, each cut to its cap if > 0."""
    if eos not in doc:
        query, passage = doc, []  # the window held only query tokens: the passage is EOS alone
    else:
        cut = doc.index(eos)
        query, passage = doc[:cut], doc[cut + 1:]
        passage = passage[:-1] if passage and passage[-1] == eos else passage
    return query[: query_tokens or None], passage[: passage_tokens or None]


def text_caps(n_ctx: int, passage_tokens: int) -> tuple[int, int]:
    """(query cap, passage cap) of training pairs: the passage gets half the window unless set, the query
    what is left beside it and the two EOS.

    WHY: the loader cuts `query EOS passage EOS` at n_ctx + 1 tokens, so an uncapped passage keeps exactly
    the tokens its query left over; its length (its left padding) then identifies its query, and a model
    learns that shortcut instead of retrieval (seen: training InfoNCE fell while held-out top-1 sank
    below chance). A passage capped at a length its query cannot change carries no such signal; only a
    query longer than its cap still shortens its passage (rare: the default leaves it half the window)."""
    cap = passage_tokens or n_ctx // 2
    if not 1 <= cap <= n_ctx - 2:
        raise ConfigError(f"objective.passage_tokens={passage_tokens}: must leave room for a query in n_ctx="
                          f"{n_ctx} (1 .. n_ctx - 2)")
    return n_ctx - cap - 1, cap


@dataclass
class ContrastiveOptions:
    group: int = 31  # passages per group (paper: 31); train.micro_batch must be a multiple
    temperature: float = 0.02  # cosine similarity / temperature (paper's code: 0.02)
    pooling: str = "last"  # last: position -2 (paper); mean: over the text positions
    val_pairs: int = 512  # held-out pairs validated on (whole groups of them)
    passage_tokens: int = 0  # passages are cut to this many tokens (0: n_ctx // 2), queries to the rest


@register
class Contrastive(Objective):
    name = "contrastive"
    Options = ContrastiveOptions
    data_modes = ("document",)

    def check(self) -> None:
        super().check()
        o, mb = self.options, self.cfg.train.micro_batch
        if o.group < 2 or mb % o.group:
            raise ConfigError(f"objective.group={o.group}: must be >= 2 and divide train.micro_batch={mb} "
                              f"(a micro-batch holds whole groups); set --train.micro_batch {max(o.group, 2)}")
        if not o.temperature > 0:
            raise ConfigError(f"objective.temperature must be > 0, got {o.temperature}")
        if o.pooling not in POOLINGS:
            raise ConfigError(f"objective.pooling must be one of {list(POOLINGS)}, got {o.pooling!r}")
        text_caps(self.cfg.model.n_ctx, o.passage_tokens)
        from data_prep.pair_format import pairs_manifest
        pairs_manifest(self.cfg.data.path)  # FormatError naming `data_prep pairs` for a text prep

    def flops_per_sample(self, model_cfg=None) -> float:
        return 2 * super().flops_per_sample(model_cfg)  # query and passage

    def tokens_per_sample(self) -> int:
        return 2 * self.cfg.model.n_ctx

    # -- batches: (query ids, passage ids, query mask, passage mask), left padded to n_ctx --------------
    def _pad(self, texts: list[list[int]], device) -> tuple[torch.Tensor, torch.Tensor]:
        n, eos = self.cfg.model.n_ctx, self._eos()
        return left_pad(texts, n, eos, eos).to(device), text_mask(texts, n).to(device)

    def _eos(self) -> int:
        if not hasattr(self, "_eos_id"):
            from data_prep.pair_format import pairs_manifest
            self._eos_id = int(pairs_manifest(self.cfg.data.path)["eos_id"])
        return self._eos_id

    def batch(self, raw: Any, device: torch.device) -> tuple[torch.Tensor, ...]:
        if isinstance(raw, (list, tuple)) and raw and isinstance(raw[0], PairGroup):  # validation groups
            queries = [q for g in raw for q in g.queries]
            passages = [p for g in raw for p in g.passages]
        else:
            caps = text_caps(self.cfg.model.n_ctx, self.options.passage_tokens)
            split = [split_document(doc, self._eos(), *caps) for doc in documents_from_rows(*raw)]
            queries, passages = [q for q, _ in split], [p for _, p in split]
        return (*self._pad(queries, device), *self._pad(passages, device))

    def embeddings(self, model, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised (query, passage) embeddings; one forward over both (the DeepSpeed engine's module)."""
        q_ids, q_mask, p_ids, p_mask = batch
        module = getattr(model, "module", model)
        emb = embed_sequences(module, torch.cat([q_ids, p_ids]), self.options.pooling, torch.cat([q_mask, p_mask]))
        return emb[: len(q_ids)], emb[len(q_ids):]

    def loss(self, model, batch) -> tuple[torch.Tensor, int]:
        queries, passages = self.embeddings(model, batch)
        loss, _ = info_nce(queries, passages, self.options.group, self.options.temperature)
        return loss, len(queries)

    # -- validation -----------------------------------------------------------------------------------
    def validation_set(self, manifest: dict[str, Any]):
        from data_prep.pair_format import read_pairs

        pairs = read_pairs(self.cfg.data.path, "val", limit=self.options.val_pairs)
        g = self.options.group
        q_cap, p_cap = text_caps(self.cfg.model.n_ctx, self.options.passage_tokens)  # as training sees them
        queries = [q[:q_cap].tolist() for q in pairs.queries]
        passages = [p[:p_cap].tolist() for p in pairs.passages]
        groups = [PairGroup(queries[i:i + g], passages[i:i + g]) for i in range(0, len(pairs) - g + 1, g)]
        return groups or None

    def eval_items(self, val, max_tokens: int = 0):
        if max_tokens:
            per_group = self.options.group * self.tokens_per_sample()
            return val[: max(1, math.ceil(max_tokens / per_group))]
        return val

    def eval_sums(self, model, batch) -> dict[str, float]:
        queries, passages = self.embeddings(model, batch)
        loss, scores = info_nce(queries, passages, self.options.group, self.options.temperature, "sum")
        right = scores.argmax(-1) == torch.arange(self.options.group, device=scores.device)
        return {"nats": float(loss), "correct": int(right.sum()), "queries": int(right.numel())}

    def sum_keys(self) -> list[str]:
        return ["nats", "correct", "queries"]

    def metrics(self, sums: dict[str, float], val) -> dict[str, Any]:
        n = max(int(sums.get("queries", 0)), 1)
        return {"val_loss": sums.get("nats", 0.0) / n, "val_top1": sums.get("correct", 0) / n,
                "val_queries": int(sums.get("queries", 0)), "val_chance": 1 / self.options.group}


@dataclass
class PairGroup:
    """`group` held-out pairs validated together (token lists, EOS not included)."""
    queries: list[list[int]]
    passages: list[list[int]]
