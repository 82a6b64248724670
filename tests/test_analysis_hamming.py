"""The modified Hamming metric: invertible model -> 0, constant model -> chance, reproducible."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from eval.hamming import (TOP_K, Convergence, decode_topk, embedding_pinv, hamming, hamming_by_depth, l1_converged,
                          step_sizes)

VOCAB, D, T = 256, 64, 16


class ToyModel(nn.Module):
    """The part of the model interface the metric uses, with chosen blocks."""

    def __init__(self, blocks: list[nn.Module], positions: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.embedding = nn.Embedding(VOCAB, D)
        self.position = nn.Embedding(T, D) if positions else None
        self.blocks = nn.ModuleList(blocks)

    def embed(self, ids):
        x = self.embedding(ids)
        if self.position is not None:
            x = x + self.position(torch.arange(ids.size(1)))
        return x

    def forward_blocks(self, x, n_blocks=None):
        for block in self.blocks[:n_blocks] if n_blocks is not None else self.blocks:
            x = block(x)
        return x


class Constant(nn.Module):
    """Maps every input to the same output (its gradient w.r.t. the input is zero)."""

    def __init__(self):
        super().__init__()
        self.value = nn.Parameter(torch.randn(D))

    def forward(self, x):
        return self.value.expand_as(x) + 0.0 * x


def _ids(n=8, seed=1):
    return torch.randint(0, VOCAB, (n, T), generator=torch.Generator().manual_seed(seed))


def test_step_sizes_decay_linearly_to_a_tenth():
    sizes = step_sizes(0.5, 11)
    assert sizes[0] == pytest.approx(0.5) and sizes[-1] == pytest.approx(0.05)
    assert all(a > b for a, b in zip(sizes, sizes[1:]))


def test_pinv_decodes_embeddings_exactly():
    model = ToyModel([])
    ids = _ids()
    top = decode_topk(model.embedding(ids).detach(), embedding_pinv(model))
    assert (top[..., 0] == ids).all()


def test_identity_blocks_give_zero():
    model = ToyModel([nn.Identity(), nn.Identity()])
    res = hamming(model, _ids(), steps=200, lr=0.05)
    assert res.mean == 0.0 and res.final_l1 < 0.05


def test_positional_offset_is_removed_before_decoding():
    model = ToyModel([nn.Identity()], positions=True)
    assert hamming(model, _ids(), steps=200, lr=0.05).mean == 0.0


def test_constant_model_gives_chance():
    model = ToyModel([Constant()])
    res = hamming(model, _ids(n=32), steps=20, lr=0.05)
    chance = 1 - TOP_K / VOCAB
    assert abs(res.mean - chance) < 0.02
    assert len(res.per_sample) == 32 and res.std > 0


def test_fixed_seed_reproducible_and_seed_matters():
    model = ToyModel([nn.Sequential(nn.Linear(D, D), nn.Tanh())])
    a = hamming(model, _ids(), steps=30, lr=0.05, seed=3)
    b = hamming(model, _ids(), steps=30, lr=0.05, seed=3)
    c = hamming(model, _ids(), steps=30, lr=0.05, seed=4)
    assert a.per_sample == b.per_sample and a.final_l1 == b.final_l1
    assert a.final_l1 != c.final_l1


def test_depths_and_pad_mask():
    # block 1 is the identity, block 2 destroys the input: h rises with depth
    model = ToyModel([nn.Identity(), Constant()])
    results = hamming_by_depth(model, _ids(n=16), [1, 2], steps=150, lr=0.05)
    assert [r.depth for r in results] == [1, 2]
    assert results[0].mean == 0.0 and results[1].mean > 0.9
    # pad positions are not counted: a mask with one real position per sample
    mask = torch.zeros(16, T, dtype=torch.bool)
    mask[:, 0] = True
    res = hamming(model, _ids(n=16), depth=2, steps=5, lr=0.05, pad_mask=mask)
    assert all(h in (0.0, 1.0) for h in res.per_sample)


def test_bad_depth_is_named():
    with pytest.raises(ValueError, match="depth 5"):
        hamming(ToyModel([nn.Identity()]), _ids(), depth=5, steps=1)


def test_scale_to_embedding_makes_h_independent_of_the_embedding_scale():
    """Identity blocks are invertible at any embedding scale; with the published N(0, 1) start and a
    fixed step size, a std-0.001 embedding is not recovered (the last steps are lr/10 = 0.005 wide), with the scaled start it is."""
    model = ToyModel([nn.Identity()])
    with torch.no_grad():
        model.embedding.weight.mul_(0.001)
    published = hamming(model, _ids(), steps=200, lr=0.05)
    scaled = hamming(model, _ids(), steps=200, lr=0.05, scale_to_embedding=True)
    assert published.mean > 0.5 and scaled.mean == 0.0


def test_convergence_criterion_on_known_traces():
    plateau = [1.0 - 0.99 * (1 - 0.5 ** t) for t in range(200)]  # falls fast, then flat at 0.01
    assert l1_converged(plateau, window=50, tol=0.01)
    steady = [1.0 - 0.001 * t for t in range(200)]  # 0.1 % per step: slow, far from any floor
    assert not l1_converged(steady, window=50, tol=0.01)
    tail = [0.05 * 0.995 ** t for t in range(200)]  # small against the start, large against itself
    assert not l1_converged([1.0] + tail, window=50, tol=0.01)
    assert l1_converged([0.7] * 100, window=50, tol=0.01)  # never moved: stationary (ratio 1 says so)
    assert not l1_converged(plateau[:99], window=50, tol=0.01)  # too short to judge
    with pytest.raises(ValueError, match="window"):
        Convergence(window=0)


def _tiny(family):
    from pretrain.config import ModelConfig
    from pretrain.models import build_model
    torch.manual_seed(0)
    return build_model(ModelConfig(family=family, d_model=32, n_layers=2, n_ctx=T, vocab_size=VOCAB,
                                   heads=1 if family == "mixer" else 2))


def test_a_real_model_row_marked_not_converged_still_descends():
    """Too small a step: the published-length descent is marked not converged, and more steps of the
    same descent do lower the L1 (the mark is right); the first steps are the published ones."""
    model, ids = _tiny("llama"), _ids(n=4)
    short = hamming(model, ids, steps=200, lr=0.0005)
    assert not short.converged and short.steps_run == 200 and 0.8 < short.l1_ratio < 1.0
    longer = hamming(model, ids, steps=600, lr=0.0005)
    assert longer.final_l1 < 0.95 * short.final_l1
    assert short.start_l1 == longer.start_l1  # same x0: the rows differ only in how far they got


def test_a_real_model_run_until_converged_is_marked_and_stays_put():
    """Run on until converged: marked converged before the cap, and forcing 300 more steps at the same
    step size (a window longer than any run: never judged converged) moves the L1 by under 10 % and h by at most one position in 16."""
    model, ids = _tiny("llama"), _ids(n=4)
    published = hamming(model, ids, steps=100, lr=0.05)
    assert not published.converged  # 100 steps: the descent is still falling
    done = hamming(model, ids, steps=100, lr=0.05, convergence=Convergence(max_steps=3000))
    assert done.converged and 200 <= done.steps_run < 3000 and done.l1_ratio < published.l1_ratio
    # its first 100 steps are the published descent: same h and mark at the end of the schedule
    assert done.schedule_per_sample == published.per_sample and done.schedule_converged is False
    assert published.schedule_per_sample is None  # not extended: nothing to report twice
    forced = hamming(model, ids, steps=100, lr=0.05,
                     convergence=Convergence(window=10**6, max_steps=done.steps_run + 300))
    assert forced.steps_run == done.steps_run + 300 and not forced.converged
    assert abs(forced.final_l1 - done.final_l1) < 0.1 * done.final_l1
    assert abs(forced.mean - done.mean) <= 1 / T + 1e-9
