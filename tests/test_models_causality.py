"""Causality of every model and option: the future never reaches the past, exactly, in fp32; masked
mixing entries get exactly zero gradient (and stay exactly zero after a softmax)."""
import torch

from pretrain.models import build_model
from pretrain.models.mixer import MaskedMatrix
from test_models_variants import MIXER_VARIANTS, variant_params, tiny_config


@variant_params()
def test_changing_future_tokens_never_changes_past_logits(overrides):
    torch.manual_seed(0)
    cfg = tiny_config(**overrides)
    model = build_model(cfg).eval()  # eval: dropout off, so two forwards are comparable exactly
    ids = torch.randint(0, cfg.vocab_size, (2, cfg.n_ctx))
    base = model(ids).logits
    for t in (0, 5, cfg.n_ctx - 2):
        changed = ids.clone()
        changed[:, t + 1:] = torch.randint(0, cfg.vocab_size, changed[:, t + 1:].shape)
        assert (changed[:, t + 1:] != ids[:, t + 1:]).any()
        out = model(changed).logits
        assert torch.equal(out[:, :t + 1], base[:, :t + 1]), f"future leaked into position <= {t}"
        assert not torch.equal(out[:, t + 1:], base[:, t + 1:]), "later positions should react"


@variant_params([v for v in MIXER_VARIANTS if v[1].get("mixing") != "toeplitz"])  # Toeplitz weights are per-distance vectors, no T x T mask
def test_masked_mixing_entries_get_exactly_zero_gradient(overrides):
    torch.manual_seed(0)
    cfg = tiny_config(**overrides)
    model = build_model(cfg)
    ids = torch.randint(0, cfg.vocab_size, (2, cfg.n_ctx))
    model(ids, labels=ids).loss.backward()
    matrices = [m for m in model.modules() if isinstance(m, MaskedMatrix)]
    mixer_layers = cfg.n_layers - len(cfg.attention_layers)  # a hybrid's attention layers have none
    assert len(matrices) == mixer_layers * (2 if cfg.expansion else 1)
    future = 1 - matrices[0].mask  # strictly upper triangle
    for m in matrices:
        grad = m.weight.grad
        assert grad is not None and grad.abs().sum() > 0
        assert torch.count_nonzero(grad * future) == 0
        # and the effective matrix has exact zeros there (also after the softmax)
        g, ob, ib, t = *m.weight.shape[:3], cfg.n_ctx
        blocks = m.matrix(t).detach().view(g, ob, t, ib, t).permute(0, 1, 3, 2, 4)
        assert torch.count_nonzero(blocks * future) == 0


def test_softmax_rows_are_normalised_over_the_past_only():
    torch.manual_seed(0)
    mix = MaskedMatrix(n_ctx=8, softmax=True)
    w = mix.matrix(8)[0]
    assert torch.allclose(w.sum(-1), torch.ones(8))
    assert torch.equal(w.triu(1), torch.zeros(8, 8))
    assert w[0, 0] == 1.0  # the first token can only attend to itself


def test_bf16_autocast_keeps_causality_for_the_mixer():
    torch.manual_seed(0)
    cfg = tiny_config(family="mixer")
    model = build_model(cfg)
    ids = torch.randint(0, cfg.vocab_size, (1, cfg.n_ctx))
    changed = ids.clone()
    changed[:, 9:] = (changed[:, 9:] + 1) % cfg.vocab_size
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a, b = model(ids).logits, model(changed).logits
    assert torch.equal(a[:, :9], b[:, :9])


def test_adamw_never_moves_masked_entries_and_keeps_their_state_zero():
    torch.manual_seed(0)
    cfg = tiny_config(family="mixer", expansion=1)
    model = build_model(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    before = [m.weight.detach().clone() for m in model.modules() if isinstance(m, MaskedMatrix)]
    ids = torch.randint(0, cfg.vocab_size, (2, cfg.n_ctx))
    for _ in range(3):
        opt.zero_grad()
        model(ids, labels=ids).loss.backward()
        opt.step()
    matrices = [m for m in model.modules() if isinstance(m, MaskedMatrix)]
    future = (1 - matrices[0].mask).bool()
    for m, w0 in zip(matrices, before):
        assert torch.equal(m.weight.detach()[..., future], w0[..., future])
        assert not torch.equal(m.weight.detach()[..., ~future], w0[..., ~future])
        state = opt.state[m.weight]
        assert torch.count_nonzero(state["exp_avg"][..., future]) == 0
        assert torch.count_nonzero(state["exp_avg_sq"][..., future]) == 0
