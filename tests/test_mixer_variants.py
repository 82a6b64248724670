"""The improvement study's mixer variants (pretrain/models/mixer_variants.py) do what their options
say: the running-mean init is the causal running mean, sum-one rows sum to one, the decay starts as
the plain mixer and learns, the gate gates, the hybrid runs attention where asked; decoding one token
at a time matches the forward; combinations that cannot work are refused naming the key.
(Causality, exact FLOPs, parameters and activations of every variant: test_models_causality.py and
test_flops.py, through OPTION_VARIANTS.)"""
import pytest
import torch

from pretrain.config import ModelConfig
from pretrain.models import build_model
from pretrain.models.mixer import MaskedMatrix, TokenMixing
from pretrain.models.mixer_variants import GatedMixing, VariantMatrix
from stackcore.config import ConfigError
from test_models_variants import tiny_config


def matrices(model):
    return [m for m in model.modules() if isinstance(m, MaskedMatrix)]


def test_defaults_build_the_plain_mixer_with_the_same_random_draws():
    torch.manual_seed(0)
    plain = build_model(tiny_config(family="mixer"))
    assert all(type(m) is MaskedMatrix for m in matrices(plain))
    assert all(type(b.mixing) is TokenMixing for b in plain.blocks)
    torch.manual_seed(0)
    # an option that only changes the forward (not the init) draws the same weights
    rows = build_model(tiny_config(family="mixer", row_sum_one=True))
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), rows.state_dict().values()))


def test_running_mean_init_is_the_causal_running_mean():
    torch.manual_seed(0)
    model = build_model(tiny_config(family="mixer", mixing_init="running_mean", kernel=2))
    t = 16
    expected = torch.ones(t, t).tril() / torch.arange(1, t + 1.0)[:, None] / 2  # two taps share each row
    for m in matrices(model):
        assert isinstance(m, VariantMatrix)
        w = m.matrix(t)[0]  # [1 x T, 2 x T]: both taps side by side
        assert torch.allclose(w[:, :t], expected) and torch.allclose(w[:, t:], expected)
        assert torch.allclose(w.sum(-1), torch.ones(t)) and torch.count_nonzero(m.bias) == 0
    mix = VariantMatrix(n_ctx=8, init="running_mean")  # the mixing averages the past: y_i = mean(x_0..x_i)
    x = torch.randn(1, 1, 8, 3)
    assert torch.allclose(mix(x)[0, 0], x[0, 0].cumsum(0) / torch.arange(1, 9.0)[:, None], atol=1e-6)


def test_softmax_running_mean_init_is_the_same_matrix():
    a = VariantMatrix(n_ctx=8, softmax=True, init="running_mean").matrix(8)
    b = VariantMatrix(n_ctx=8, init="running_mean").matrix(8)
    assert torch.allclose(a, b)


def test_sum_one_rows_sum_to_one_keep_signs_and_stay_causal():
    torch.manual_seed(0)
    mix = VariantMatrix(n_ctx=12, in_blocks=2, out_blocks=3, groups=2, row_sum_one=True)
    w = mix.matrix(12)  # [2, 3*12, 2*12]
    assert torch.allclose(w.sum(-1), torch.ones(2, 36), atol=1e-6)
    assert (w < 0).any()  # unlike a softmax, entries may be negative
    blocks = w.view(2, 3, 12, 2, 12).permute(0, 1, 3, 2, 4)
    assert torch.count_nonzero(blocks * torch.ones(12, 12).triu(1)) == 0
    assert torch.allclose(mix.matrix(5).sum(-1), torch.ones(2, 15), atol=1e-6)  # shorter inputs too


def test_decay_starts_at_one_and_learns_a_per_distance_profile():
    torch.manual_seed(0)
    cfg = tiny_config(family="mixer", distance_decay=True)
    model = build_model(cfg)
    torch.manual_seed(0)
    plain = build_model(tiny_config(family="mixer"))
    ids = torch.randint(0, cfg.vocab_size, (2, cfg.n_ctx))
    # all-ones factors: the same function as the plain mixer drawn with the same seed
    assert torch.allclose(model(ids).logits, plain(ids).logits, atol=1e-6)
    model(ids, labels=ids).loss.backward()
    for m in matrices(model):
        assert m.decay.shape == (1, 1, 1, cfg.n_ctx) and m.decay.grad.abs().min() > 0
        # W_ij * d_(i-j): the effective matrix is the weight scaled per diagonal
        with torch.no_grad():
            m.decay.copy_(torch.arange(cfg.n_ctx, dtype=torch.float32).view(1, 1, 1, -1))
            w = m.matrix(cfg.n_ctx)[0]
        i, j = 5, 2
        assert float(w[i, j]) == pytest.approx(float(m.weight.detach()[0, 0, 0, i, j]) * (i - j))


def test_gate_multiplies_the_mixing_output_by_a_sigmoid_of_its_input():
    torch.manual_seed(0)
    model = build_model(tiny_config(family="mixer", mixing_gate=True))
    gated = model.blocks[0].mixing
    assert isinstance(gated, GatedMixing)
    x = torch.randn(2, 16, 32)
    with torch.no_grad():
        assert torch.allclose(gated(x), gated.mixing(x) * torch.sigmoid(gated.gate(x)))
        gated.gate.weight.zero_()
        gated.gate.bias.fill_(-30.0)  # a closed gate: the block passes its input through
        assert gated(x).abs().max() < 1e-9


def test_hybrid_runs_attention_in_the_listed_layers_only():
    from pretrain.models.llama import RopeAttention

    model = build_model(tiny_config(family="mixer", n_layers=3, attention_layers=(1,), attention_heads=2))
    kinds = [type(b.mixing).__name__ for b in model.blocks]
    assert kinds == ["TokenMixing", "RopeAttention", "TokenMixing"]
    assert model.blocks[1].mixing.heads == 2 and isinstance(model.blocks[1].mixing, RopeAttention)
    assert model.decode_state() is None  # generation re-runs the window: attention has no step here


@pytest.mark.parametrize("overrides", [dict(mixing_init="running_mean"), dict(row_sum_one=True, kernel=2),
                                       dict(distance_decay=True, heads=2, expansion=1),
                                       dict(mixing_gate=True, row_sum_one=True, distance_decay=True)],
                         ids=["running-mean", "rows-k2", "decay-heads-exp", "gate-rows-decay"])
def test_decode_step_matches_the_forward(overrides, monkeypatch):
    torch.manual_seed(0)
    cfg = tiny_config(family="mixer", n_ctx=20, **overrides)
    model = build_model(cfg).eval()
    with torch.no_grad():  # move the decay off its all-ones start so the test sees it
        for m in matrices(model):
            if m.decay is not None:
                m.decay.uniform_(0.5, 1.5)
    ids = torch.randint(0, cfg.vocab_size, (1, cfg.n_ctx))
    with torch.no_grad():
        full = model(ids).logits[0]
    monkeypatch.setattr(MaskedMatrix, "matrix", lambda *a, **k: pytest.fail("a T x T matrix was built"))
    state = model.decode_state()
    steps = torch.stack([model.decode_step(int(t), state) for t in ids[0]])
    assert torch.allclose(steps, full, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("overrides,match", [
    (dict(mixing_init="running_mean", mixing="toeplitz"), 'mixing_init = "running_mean" with model.mixing'),
    (dict(distance_decay=True, mixing="toeplitz"), "distance_decay = true with model.mixing"),
    (dict(row_sum_one=True, softmax=True), "row_sum_one = true with model.softmax"),
    (dict(distance_decay=True, softmax=True), "distance_decay = true with model.softmax"),
    (dict(mixing_init="running_mean", expansion=1), "expansion"),
    (dict(mixing_gate=True, bidirectional=True), "bidirectional"),
    (dict(mixing_gate=True, linear=True), "linear"),
    (dict(attention_layers=(2,)), r"layer 2 is outside 0\.\.1"),
    (dict(attention_layers=(0, 0)), "twice"),
    (dict(attention_layers=(0, 1)), "every layer"),
    (dict(attention_layers=(0,), attention_heads=3), "attention_heads = 3"),
    (dict(family="llama", heads=2, mixing_gate=True), "does not implement"),
    (dict(family="gpt", heads=2, attention_layers=(0,)), "does not implement"),
])
def test_config_refuses_what_cannot_work(overrides, match):
    with pytest.raises(ConfigError, match=match):
        ModelConfig(**{"d_model": 32, "n_layers": 2, "n_ctx": 16, "vocab_size": 97, **overrides}).validate()


def test_a_toml_list_of_attention_layers_loads_and_trains_a_step(tmp_path):
    from stackcore.config import dump_toml, load_config
    from pretrain.config import RunConfig

    path = tmp_path / "hybrid.toml"
    path.write_text('[model]\nfamily = "mixer"\nd_model = 32\nn_layers = 2\nn_ctx = 16\nvocab_size = 97\n'
                    'attention_layers = [1]\nattention_heads = 2\nmixing_gate = true\n')
    cfg = load_config(RunConfig, path, ["--model.distance_decay", "true"]).model
    assert cfg.attention_layers == (1,) and cfg.distance_decay
    again = tmp_path / "resolved.toml"  # what a run directory keeps: it must load back equal
    again.write_text(dump_toml(load_config(RunConfig, path)))
    assert load_config(RunConfig, again).model.attention_layers == (1,)
    model = build_model(cfg)
    ids = torch.randint(0, 97, (2, 16))
    loss = model(ids, labels=ids).loss
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in model.parameters())


def test_blocked_product_runs_the_same_variant_matrix_as_the_dense_one():
    torch.manual_seed(0)
    dense = VariantMatrix(n_ctx=64, groups=2, in_blocks=2, impl="dense", row_sum_one=True, decay=True)
    with torch.no_grad():
        dense.decay.uniform_(0.5, 1.5)
    blocked = VariantMatrix(n_ctx=64, groups=2, in_blocks=2, impl="blocked", row_sum_one=True, decay=True)
    blocked.load_state_dict(dense.state_dict())
    x = torch.randn(3, 2, 2 * 64, 5)
    assert blocked.running_impl(64) == "blocked"
    assert torch.allclose(blocked(x), dense(x), rtol=1e-5, atol=1e-5)
