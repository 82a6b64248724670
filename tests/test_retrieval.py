"""Retrieval pieces: sequence embeddings (feature-axis normalisation, batch-of-one and permutation
invariances), the InfoNCE loss against a hand computation, candidate sets and tie-aware metrics, the
slot scorer on a recoverable and an unrecoverable synthetic task, and `eval retrieval` on real pairs."""
from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from data_prep.pair_format import candidate_sets, rank_metrics
from pretrain.config import ModelConfig
from pretrain.models import build_model
from pretrain.models.retrieval_head import SlotScorer
from pretrain.models.sequence_embedding import cosine_scores, embed_texts, hidden_states, left_pad, pool
from pretrain.objectives.contrastive import documents_from_rows, info_nce, split_document, text_caps

EOS = 96


def _model(family: str):
    torch.manual_seed(0)
    return build_model(ModelConfig(family=family, d_model=32, n_layers=2, n_ctx=16, vocab_size=97, heads=2)).eval()


def _texts(n: int, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, EOS, size=int(rng.integers(1, 30))).tolist() for _ in range(n)]  # some > n_ctx


@pytest.mark.parametrize("family", ["mixer", "llama"])
@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_embeddings_unit_norm_batch_of_one_and_permutation(family, pooling):
    model, texts = _model(family), _texts(10)
    batch = embed_texts(model, texts, EOS, pooling, batch=len(texts))
    ones = torch.cat([embed_texts(model, [t], EOS, pooling, batch=1) for t in texts])
    assert torch.allclose(batch, ones, atol=1e-5)  # a text's embedding does not depend on its batch
    assert torch.allclose(batch.norm(dim=-1), torch.ones(len(texts)), atol=1e-5)  # over the feature axis
    query, candidates = batch[:1], batch[1:]
    scores = cosine_scores(query, candidates[None])
    perm = torch.randperm(len(candidates), generator=torch.Generator().manual_seed(1))
    assert torch.allclose(cosine_scores(query, candidates[perm][None]), scores[:, perm], atol=1e-6)
    assert len(set(scores[0].round(decimals=5).tolist())) > 1  # the scores are not all equal


def test_the_original_batch_axis_normalisation_makes_scores_depend_on_the_batch():
    # the bug the reference benchmark had: normalising over dim 0 couples a text to its batch mates
    model, texts = _model("llama"), _texts(6)
    raw = pool(hidden_states(model, left_pad(texts, 16, EOS, EOS)), "last")
    wrong_batch = F.normalize(raw, dim=0)
    wrong_first = F.normalize(raw[:3], dim=0)
    assert not torch.allclose(wrong_batch[:3], wrong_first, atol=1e-3)


def test_left_padding_keeps_the_text_end_at_position_minus_two():
    ids = left_pad([[5, 6, 7], list(range(40))], 8, pad_id=EOS, eos_id=EOS)
    assert ids[0].tolist() == [EOS] * 4 + [5, 6, 7, EOS]
    assert ids[1].tolist() == list(range(7)) + [EOS]  # long texts keep their first n_ctx - 1 tokens


def test_info_nce_equals_a_hand_computation():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    loss, scores = info_nce(q, p, group=2, temperature=0.5)
    # scores / 0.5: query 0 -> [2.0, 1.2] (target 0), query 1 -> [0.0, 1.6] (target 1)
    hand = (math.log(1 + math.exp(1.2 - 2.0)) + math.log(1 + math.exp(0.0 - 1.6))) / 2
    assert scores.flatten().tolist() == pytest.approx([2.0, 1.2, 0.0, 1.6])
    assert float(loss) == pytest.approx(hand, rel=1e-6)
    two_groups, _ = info_nce(torch.cat([q, q]), torch.cat([p, p]), group=2, temperature=0.5)
    assert float(two_groups) == pytest.approx(hand, rel=1e-6)  # groups never see each other's passages


@pytest.mark.parametrize("pad_side", ["left", "right"])
def test_document_rows_split_back_into_query_and_passage(pad_side):
    from pretrain.data import pad_document

    doc = np.array([1, 2, 3, EOS, 4, 5, EOS])
    row = torch.as_tensor(pad_document(doc, 10, pad_side, EOS))
    (got,) = documents_from_rows(row[None, 0], row[None, 1])
    assert got == doc.tolist() and split_document(got, EOS) == ([1, 2, 3], [4, 5])
    assert split_document([1, 2, EOS, 4], EOS) == ([1, 2], [4])  # a window cut inside the passage
    assert split_document([1, 2], EOS) == ([1, 2], [])


def test_training_passages_do_not_reveal_their_query_length():
    # the loader cuts `query EOS passage EOS` at n_ctx + 1: uncapped, a passage keeps what its query left
    # over, so its length (its left padding) identifies the query -- a shortcut a model learns at once
    n_ctx, passage = 32, list(range(100, 160))
    docs = [(list(range(1, 1 + q)) + [EOS] + passage + [EOS])[: n_ctx + 1] for q in (3, 10)]
    uncapped = [len(split_document(d, EOS)[1]) for d in docs]
    capped = [split_document(d, EOS, *text_caps(n_ctx, 0)) for d in docs]
    assert uncapped[0] != uncapped[1]
    assert [len(p) for _, p in capped] == [16, 16] and [len(q) for q, _ in capped] == [3, 10]
    assert text_caps(n_ctx, 0) == (15, 16) and text_caps(n_ctx, 20) == (11, 20)


def test_candidate_sets_fixed_and_rank_metrics_tie_aware():
    sets, truth = candidate_sets(20, 50, 8, seed=3)
    again, truth_again = candidate_sets(20, 50, 8, seed=3)
    assert (sets == again).all() and (truth == truth_again).all()
    assert all(sets[i, truth[i]] == i and len(set(sets[i])) == 7 for i in range(20))
    assert rank_metrics(np.zeros((5, 8)), np.zeros(5, dtype=int)) == pytest.approx((1 / 8, np.mean(1 / np.arange(1, 9))))
    scores = np.array([[3.0, 1.0, 2.0], [1.0, 3.0, 2.0]])
    assert rank_metrics(scores, np.array([0, 0])) == pytest.approx((0.5, (1 + 1 / 3) / 2))


def _synthetic(batch: int, n: int, d: int, recoverable: bool, gen: torch.Generator):
    passages = F.normalize(torch.randn(batch, n - 1, d, generator=gen), dim=-1)
    truth = torch.randint(0, n - 1, (batch,), generator=gen)
    if recoverable:  # the query is a noisy copy of the true passage
        query = passages[torch.arange(batch), truth] + 0.3 * torch.randn(batch, d, generator=gen) / math.sqrt(d)
    else:  # the query carries no information about which slot is right
        query = F.normalize(torch.randn(batch, d, generator=gen), dim=-1)
    return torch.cat([query[:, None], passages], dim=1), truth


@pytest.mark.parametrize("recoverable", [True, False])
def test_slot_scorer_learns_a_recoverable_task_and_stays_at_chance_otherwise(recoverable):
    torch.manual_seed(0)
    n, d = 8, 16
    gen = torch.Generator().manual_seed(0)
    scorer = SlotScorer(n, d, n_layers=2)
    opt = torch.optim.Adam(scorer.parameters(), lr=3e-3)
    for _ in range(300):
        slots, truth = _synthetic(64, n, d, recoverable, gen)
        loss = F.cross_entropy(scorer(slots), truth)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        slots, truth = _synthetic(4000, n, d, recoverable, torch.Generator().manual_seed(99))
        top1 = float((scorer(slots).argmax(-1) == truth).float().mean())
    chance = 1 / (n - 1)
    if recoverable:
        assert top1 > 0.9
    else:
        assert abs(top1 - chance) < 0.05  # 4000 fresh groups: the standard error is ~0.006


def test_eval_retrieval_baselines_on_real_pairs(shared_data, tmp_path):
    from data_prep.pairs import main as pairs_main
    from eval.retrieval import main as eval_main

    pairs = tmp_path / "pairs"
    assert pairs_main(["--input", str(shared_data / "tinystories/train-head.jsonl"), "--tokenizer", "gpt2",
                       "--out", str(pairs), "--val-fraction", "0.15", "--workers", "1", "--progress", "false"]) == 0
    for out in ("a", "b"):
        assert eval_main(["--pairs", str(pairs), "--candidates", "8,32,1000", "--out", str(tmp_path / out)]) == 0
    text = (tmp_path / "a/retrieval.csv").read_text()
    assert text == (tmp_path / "b/retrieval.csv").read_text()  # fixed-seed candidate sets
    rows = {(r["method"], int(r["candidates"])): r for r in csv.DictReader(text.splitlines())}
    assert set(rows) == {(m, n) for m in ("random", "bm25") for n in (8, 32)}  # 1000 > the held-out pool
    assert {"method", "run", "candidates", "top1", "mrr", "n_queries"} <= set(text.splitlines()[0].split(","))
    for n in (8, 32):
        assert abs(float(rows["random", n]["top1"]) - 1 / (n - 1)) < 0.1
        assert float(rows["bm25", n]["top1"]) > 3 / (n - 1)  # names and nouns of the first sentence recur
    report = (tmp_path / "a/report.md").read_text()
    assert "| chance |" in report and "Not scored: n = [1000]" in report
    assert (tmp_path / "a/retrieval.png").stat().st_size > 0
    assert eval_main(["--pairs", str(pairs), "--candidates", "2", "--out", str(tmp_path / "c")]) == 2
