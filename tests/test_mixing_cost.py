"""The mixer's mixing options end to end: the cost model counts what each computation executes
(FlopCounterMode on a real forward + backward), Toeplitz parameter counts, config refusals, and
generation by incremental steps (no n x n matrix) that matches re-running the window."""
from __future__ import annotations

import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from pretrain.config import ModelConfig
from pretrain.generate import generate
from pretrain.models import build_model
from pretrain.models.flops import forward_flops_breakdown, param_counts, training_flops_per_token
from pretrain.models.mixing_rules import blocked_products, fft_length
from stackcore.config import ConfigError

ATEN = torch.ops.aten
SHAPES = [dict(), dict(heads=2), dict(kernel=2), dict(expansion=1), dict(heads=2, expansion=2, kernel=3)]


def tiny(**overrides) -> ModelConfig:
    cfg = ModelConfig(**{**dict(family="mixer", d_model=16, n_layers=2, n_ctx=64, vocab_size=61), **overrides})
    cfg.validate()
    return cfg


def _raw(fn):
    fn._get_raw = True  # FlopCounterMode passes tensors (not shapes), so dtypes are visible
    return fn


def _transform_flops(scale: float):
    def count(x, dim, *args, out_val=None, **kwargs):
        n = x.shape[dim[-1]] if x.is_complex() or out_val.is_complex() else out_val.shape[dim[-1]]
        n = max(n, out_val.shape[dim[-1]])  # r2c: the input length; c2r: the output length
        return int(scale * n * math.log2(n) * (out_val.numel() // out_val.shape[dim[-1]]))
    return _raw(count)


@_raw
def _complex_mul_flops(a, b, out_val=None, **kwargs):
    return 8 * out_val.numel() if out_val.is_complex() else 0  # real elementwise products are free


# The FFT convention of mixing_rules.fft_training_flops_per_column, as FlopCounterMode formulas (a
# complex c2c transform would be counted too: none should run).
FFT_FORMULAS = {ATEN._fft_r2c: _transform_flops(2.5), ATEN._fft_c2r: _transform_flops(2.5),
                ATEN._fft_c2c: _transform_flops(5.0), ATEN.mul: _complex_mul_flops}


def measured_training_flops(model, ids, formulas=None) -> int:
    with FlopCounterMode(display=False, custom_mapping=formulas or {}) as counter:
        model(ids, labels=ids).loss.backward()
    return counter.get_total_flops()


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "-".join(f"{k}{v}" for k, v in s.items()) or "flat")
@pytest.mark.parametrize("mixing,impl", [("full", "blocked"), ("toeplitz", "dense"), ("toeplitz", "blocked")])
def test_matrix_paths_count_the_products_they_run(shape, mixing, impl):
    torch.manual_seed(0)
    cfg = tiny(mixing=mixing, mixing_impl=impl, **shape)
    ids = torch.randint(0, cfg.vocab_size, (2, cfg.n_ctx))
    analytic = training_flops_per_token(cfg) * ids.numel()
    assert measured_training_flops(build_model(cfg), ids) == pytest.approx(analytic, rel=0.02)
    dense = training_flops_per_token(tiny(**shape))
    if impl == "blocked":  # it really skips work: the upper tiles are never multiplied
        assert blocked_products(64) < 0.65 * 64 * 64
        assert analytic < dense * ids.numel()


@pytest.mark.parametrize("shape", SHAPES[:2], ids=["flat", "heads2"])
def test_fft_path_counts_its_transforms_and_products(shape):
    torch.manual_seed(0)
    cfg = tiny(mixing="toeplitz", mixing_impl="fft", d_model=64, **shape)
    ids = torch.randint(0, cfg.vocab_size, (4, cfg.n_ctx))  # 256 columns: the weights' transforms < 1%
    analytic = training_flops_per_token(cfg) * ids.numel()
    measured = measured_training_flops(build_model(cfg), ids, FFT_FORMULAS)
    assert measured == pytest.approx(analytic, rel=0.02)
    assert fft_length(64) == 128
    # O(T log T): at n_ctx 4096 the FFT count is far below the dense matrix product's
    long = dict(mixing="toeplitz", n_ctx=4096, d_model=256)
    fft, dense = (forward_flops_breakdown(tiny(mixing_impl=impl, **long))["sequence"] for impl in ("fft", "dense"))
    assert fft < 0.1 * dense


def test_useful_count_does_not_depend_on_the_computation():
    counts = {impl: training_flops_per_token(tiny(mixing_impl=impl), useful=True) for impl in ("dense", "blocked")}
    counts["fft"] = training_flops_per_token(tiny(mixing="toeplitz", mixing_impl="fft"), useful=True)
    assert len(set(counts.values())) == 1
    assert training_flops_per_token(tiny(mixing_impl="blocked")) < training_flops_per_token(tiny(mixing_impl="dense"))


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "-".join(f"{k}{v}" for k, v in s.items()) or "flat")
def test_toeplitz_has_n_weights_per_block_and_counts_exactly(shape):
    full, toeplitz = tiny(**shape), tiny(mixing="toeplitz", **shape)
    model = build_model(toeplitz)
    assert param_counts(toeplitz)["total"] == model.num_params()
    blocks = sum(m.weight.shape[:3].numel() for m in model.modules() if hasattr(m, "row_weights"))
    n = toeplitz.n_ctx
    assert param_counts(full)["total"] - param_counts(toeplitz)["total"] == blocks * (n * n - n)


def test_config_refuses_what_does_not_combine():
    with pytest.raises(ConfigError, match="model.mixing"):
        ModelConfig(family="llama", heads=2, mixing="toeplitz").validate()
    with pytest.raises(ConfigError, match="model.mixing_impl"):
        ModelConfig(family="gpt", heads=2, mixing_impl="blocked").validate()
    with pytest.raises(ConfigError, match='needs model.mixing = "toeplitz"'):
        ModelConfig(mixing_impl="fft").validate()
    with pytest.raises(ConfigError, match="softmax"):
        ModelConfig(mixing="toeplitz", softmax=True).validate()
    with pytest.raises(ConfigError, match="bidirectional"):
        ModelConfig(mixing="toeplitz", bidirectional=True).validate()
    with pytest.raises(ConfigError, match="mixing_impl"):
        build_model({"family": "mixer", "mixing_impl": "tiled"})


@pytest.mark.parametrize("overrides", [dict(mixing="toeplitz"), dict(mixing="toeplitz", heads=2, kernel=2, expansion=1),
                                       dict(mixing="toeplitz", linear=True, final_norm=True), dict(),
                                       dict(softmax=True, expansion=2, kernel=2, heads=2)],
                         ids=["toeplitz", "toeplitz-all", "toeplitz-linear", "full", "full-softmax-all"])
def test_decode_step_matches_the_forward(overrides, monkeypatch):
    torch.manual_seed(0)
    cfg = tiny(n_ctx=24, **overrides)
    model = build_model(cfg).eval()
    ids = torch.randint(0, cfg.vocab_size, (1, cfg.n_ctx))
    with torch.no_grad():
        full = model(ids).logits[0]
    import pretrain.models.mixer as mixer

    def no_matrix(*args, **kwargs):
        raise AssertionError("a T x T matrix was built during decoding")

    monkeypatch.setattr(mixer, "toeplitz_matrix", no_matrix)
    monkeypatch.setattr(mixer.MaskedMatrix, "matrix", no_matrix)
    state = model.decode_state()
    steps = torch.stack([model.decode_step(int(t), state) for t in ids[0]])
    assert torch.allclose(steps, full, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="window is full"):
        model.decode_step(0, state)


def test_generation_steps_until_the_window_slides_and_matches_rerunning_it():
    torch.manual_seed(0)
    cfg = tiny(mixing="toeplitz", n_ctx=12)
    model = build_model(cfg)
    forwards = []
    model.register_forward_hook(lambda module, args, out: forwards.append(args[0].shape[1]))
    stepped = generate(model, [5, 6, 7], max_new_tokens=20)
    assert forwards == [12] * 10  # 10 tokens by steps (while ids fit: 3..12 tokens), then 10 window re-runs
    model.decode_state = lambda: None  # what a model without incremental steps gets
    rerun = generate(model, [5, 6, 7], max_new_tokens=20)
    assert stepped.new_ids == rerun.new_ids and len(stepped.new_ids) == 20


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "-".join(f"{k}{v}" for k, v in s.items()) or "flat")
@pytest.mark.parametrize("mixing,impl", [("full", "blocked"), ("toeplitz", "dense"), ("toeplitz", "fft")])
def test_activation_estimate_matches_saved_tensors(shape, mixing, impl):
    from test_flops import saved_activation_values

    from pretrain.models.flops import activation_values_per_sequence

    torch.manual_seed(0)
    cfg = tiny(mixing=mixing, mixing_impl=impl, n_ctx=24, d_model=48, **shape)
    measured = saved_activation_values(build_model(cfg), torch.randint(0, cfg.vocab_size, (1, cfg.n_ctx)))
    assert activation_values_per_sequence(cfg) == measured
