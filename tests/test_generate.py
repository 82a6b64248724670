"""pretrain.generate: valid ids, EOS, max length, the fixed window, greedy determinism, every family."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from pretrain.generate import generate


class Counter(nn.Module):
    """Predicts (last token + 1) mod V, with some probability mass on every token; checks n_ctx."""

    def __init__(self, vocab=32, n_ctx=8):
        super().__init__()
        self.n_ctx = n_ctx
        self.embedding = nn.Embedding(vocab, 4)
        self.seen_lengths = []

    def forward(self, ids, labels=None):
        assert ids.size(1) <= self.n_ctx, "window exceeded"
        self.seen_lengths.append(ids.size(1))
        vocab = self.embedding.num_embeddings
        logits = torch.zeros(ids.size(0), ids.size(1), vocab)
        logits.scatter_(-1, ((ids + 1) % vocab).unsqueeze(-1), 3.0)
        return type("Out", (), {"logits": logits, "loss": None})()


def test_greedy_follows_the_argmax_and_stops_at_max_length():
    out = generate(Counter(), [3], max_new_tokens=5)
    assert out.new_ids == [4, 5, 6, 7, 8] and out.stop == "max_new_tokens"


def test_eos_ends_generation_and_is_not_returned():
    out = generate(Counter(), [3], max_new_tokens=20, eos_id=6)
    assert out.new_ids == [4, 5] and out.stop == "eos"


def test_window_slides_or_stops():
    model = Counter(n_ctx=8)
    out = generate(model, [0, 1, 2], max_new_tokens=20)
    assert len(out.new_ids) == 20 and max(model.seen_lengths) == 8
    out = generate(Counter(n_ctx=8), [0, 1, 2], max_new_tokens=20, overflow="stop")
    assert len(out.new_ids) == 5 and out.stop == "window"


def test_sampling_is_seeded_and_valid():
    a = generate(Counter(), [1], max_new_tokens=30, temperature=1.5, seed=7)
    b = generate(Counter(), [1], max_new_tokens=30, temperature=1.5, seed=7)
    c = generate(Counter(), [1], max_new_tokens=30, temperature=1.5, seed=8)
    assert a.new_ids == b.new_ids != c.new_ids
    assert all(0 <= t < 32 for t in a.new_ids)
    # top-k = 1 is greedy whatever the temperature
    assert generate(Counter(), [1], max_new_tokens=5, temperature=2.0, top_k=1).new_ids == [2, 3, 4, 5, 6]


def test_bad_prompts_are_named():
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        generate(Counter(), [99])
    with pytest.raises(ValueError, match="empty prompt"):
        generate(Counter(), [])


@pytest.mark.parametrize("family", ["mixer", "llama", "gpt"])
def test_every_family_generates_inside_its_window(family):
    from pretrain.config import ModelConfig
    from pretrain.models import build_model

    torch.manual_seed(0)
    cfg = ModelConfig(family=family, d_model=32, n_layers=2, n_ctx=12, vocab_size=97,
                      heads=1 if family == "mixer" else 2)
    model = build_model(cfg)
    greedy = [generate(model, [5, 6, 7], max_new_tokens=20).new_ids for _ in range(2)]
    assert greedy[0] == greedy[1] and len(greedy[0]) == 20  # deterministic; the window slid past n_ctx
    assert all(0 <= t < 97 for t in greedy[0])
    sampled = generate(model, [5, 6, 7], max_new_tokens=20, temperature=1.0, seed=1)
    assert all(0 <= t < 97 for t in sampled.new_ids) and sampled.new_ids != greedy[0]
    # EOS: make the first greedy token the EOS id
    assert generate(model, [5, 6, 7], max_new_tokens=20, eos_id=greedy[0][0]).new_ids == []
    assert model.training  # the mode is restored
