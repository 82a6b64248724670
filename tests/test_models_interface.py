"""The one interface every family exposes: shapes, dtypes, loss on pre-aligned labels, embed /
forward_blocks, tying, length limits, and that the norm/residual/linear switches remove parts."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pretrain.config import RunConfig
from pretrain.models import build_model
from pretrain.models.flops import param_counts
from pretrain.models.mixer import MixerBlock
from stackcore.config import ConfigError, load_config
from conftest import REPO_ROOT
from pretrain.models.registry import family_names
from test_models_variants import VARIANTS, family_config, variant_params, tiny_config


@variant_params()
def test_shapes_loss_and_blocks_interface(overrides):
    torch.manual_seed(0)
    cfg = tiny_config(**overrides)
    model = build_model(cfg).eval()
    ids = torch.randint(0, cfg.vocab_size, (3, cfg.n_ctx))
    labels = torch.randint(0, cfg.vocab_size, (3, cfg.n_ctx))
    labels[:, -4:] = -100
    out = model(ids, labels=labels)
    assert out.logits.shape == (3, cfg.n_ctx, cfg.vocab_size) and out.logits.dtype == torch.float32
    # labels are pre-aligned: the loss is plain CE of position t against labels[t], no shift
    expected = F.cross_entropy(out.logits.reshape(-1, cfg.vocab_size), labels.reshape(-1), ignore_index=-100)
    assert torch.allclose(out.loss, expected)
    assert model(ids).loss is None
    assert isinstance(model.embedding, nn.Embedding) and isinstance(model.lm_head, nn.Linear)
    assert isinstance(model.blocks, nn.ModuleList) and len(model.blocks) == cfg.n_layers
    hidden = model.forward_blocks(model.embed(ids))
    assert hidden.shape == (3, cfg.n_ctx, cfg.d_model)
    assert torch.allclose(model.lm_head(model.final_norm(hidden)), out.logits, atol=1e-6)
    first = model.forward_blocks(model.embed(ids), n_blocks=1)
    assert torch.allclose(first, model.blocks[0](model.embed(ids)), atol=1e-6)


@variant_params([v for v in VARIANTS if v[0] in ("mixer", "mixer-all", "llama", "gpt")])
def test_bf16_autocast_forward_backward(overrides):
    torch.manual_seed(0)
    cfg = tiny_config(**overrides)
    model = build_model(cfg)
    ids = torch.randint(0, cfg.vocab_size, (2, cfg.n_ctx))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(ids, labels=ids)
    assert out.logits.dtype == torch.bfloat16 and out.loss.dtype == torch.float32
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in model.parameters())
    fp32 = model(ids, labels=ids).loss
    assert abs(out.loss.item() - fp32.item()) < 0.05 * fp32.item()


@pytest.mark.parametrize("family", family_names())
def test_inputs_longer_than_n_ctx_are_rejected_and_shorter_ones_use_the_leading_block(family):
    torch.manual_seed(0)
    cfg = family_config(family)
    model = build_model(cfg).eval()
    with pytest.raises(ValueError, match=r"length 17 exceeds model.n_ctx=16"):
        model(torch.zeros(1, 17, dtype=torch.long))
    ids = torch.randint(0, cfg.vocab_size, (2, cfg.n_ctx))
    full, short = model(ids).logits, model(ids[:, :7]).logits
    assert short.shape == (2, 7, cfg.vocab_size)
    assert torch.allclose(short, full[:, :7], atol=1e-5)  # causal: a prefix sees the same matrix block


@pytest.mark.parametrize("family", family_names())
def test_weight_tying(family):
    cfg = family_config(family, tie_embeddings=True)
    model = build_model(cfg)
    assert model.lm_head.weight is model.embedding.weight
    assert model.num_params() == param_counts(cfg)["total"]
    untied = build_model(family_config(family))
    assert untied.lm_head.weight is not untied.embedding.weight
    assert untied.num_params() - model.num_params() == cfg.vocab_size * cfg.d_model


def _count(model, kind):
    return sum(isinstance(m, kind) for m in model.modules())


def test_norm_residual_linear_switches_remove_parts():
    base = build_model(tiny_config(family="mixer"))
    assert _count(base, nn.LayerNorm) == 2 * 2
    no_norm = build_model(tiny_config(family="mixer", norm=False))
    assert _count(no_norm, nn.LayerNorm) == 0
    assert base.num_params() - no_norm.num_params() == 2 * 2 * 2 * 32  # weight + bias per LN
    # residual=false: the block output is the sublayer output alone
    block = build_model(tiny_config(family="mixer", residual=False)).blocks[0]
    x = torch.randn(1, 16, 32)
    expected = block.ffn(block.ffn_norm(block.mixing(block.mix_norm(x))))
    assert torch.allclose(block(x), expected, atol=1e-6)
    # linear: no norms, no activations, FFN = one d x d Linear; the map is affine in the input
    linear = build_model(tiny_config(family="mixer", linear=True, final_norm=True))
    assert _count(linear, nn.LayerNorm) == 0
    blk = linear.blocks[0]
    assert isinstance(blk.ffn, nn.Linear) and blk.ffn.weight.shape == (32, 32)
    assert not any(isinstance(m, (nn.GELU, nn.ReLU)) for m in linear.modules())
    f = lambda v: linear.forward_blocks(v)
    a, b = torch.randn(1, 16, 32), torch.randn(1, 16, 32)
    zero = f(torch.zeros(1, 16, 32))
    assert torch.allclose(f(a + b) - zero, (f(a) - zero) + (f(b) - zero), atol=1e-4)
    assert linear.num_params(non_embedding=True) == param_counts(linear.cfg)["non_embedding"]
    assert isinstance(blk, MixerBlock) and blk.mix_norm is None


def test_transformer_specifics():
    llama = build_model(tiny_config(family="llama", heads=4))
    assert _count(llama, nn.RMSNorm) == 2 * 2 + 1 and _count(llama, nn.LayerNorm) == 0
    assert all(m.bias is None for m in llama.modules() if isinstance(m, nn.Linear))
    gpt = build_model(tiny_config(family="gpt", heads=4, dropout=0.1))
    assert gpt.position_embedding.weight.shape == (16, 32) and _count(gpt, nn.Dropout) > 0
    ids = torch.randint(0, 97, (2, 16))
    gpt.train()
    assert not torch.equal(gpt(ids).logits, gpt(ids).logits)  # dropout active in training
    gpt.eval()
    assert torch.equal(gpt(ids).logits, gpt(ids).logits)


def test_every_shipped_model_config_builds_and_unknown_family_is_rejected():
    paths = sorted((REPO_ROOT / "configs" / "models").glob("*.toml"))
    names = {p.stem for p in paths}
    assert {"mixer-tiny", "llama-tiny", "gpt-tiny", "mixer-1024", "llama-512"} <= names
    for path in paths:
        cfg = load_config(RunConfig, path)
        if "tiny" in path.stem:
            model = build_model(cfg)  # a RunConfig works too (its .model is used)
            assert model.num_params() == param_counts(cfg.model)["total"]
            assert (cfg.model.n_layers, cfg.model.n_ctx, cfg.model.vocab_size) == (2, 64, 50257)
    pair = {p.stem: load_config(RunConfig, p).model for p in paths if p.stem in ("mixer-1024", "llama-512")}
    assert (pair["mixer-1024"].d_model, pair["mixer-1024"].n_layers) == (1024, 16)
    assert (pair["llama-512"].d_model, pair["llama-512"].n_layers, pair["llama-512"].heads) == (512, 16, 4)
    with pytest.raises(ConfigError, match="model.family"):
        load_config(RunConfig, None, ["--model.family", "rnn"])


def test_rope_scores_depend_only_on_relative_position():
    from pretrain.models.llama import apply_rope, rope_tables

    torch.manual_seed(0)
    cos, sin = rope_tables(32, 8, 10000.0)
    q, k = torch.randn(8), torch.randn(8)

    def score(i, j):
        rq = apply_rope(q.expand(1, 1, 32, 8), cos, sin)[0, 0, i]
        rk = apply_rope(k.expand(1, 1, 32, 8), cos, sin)[0, 0, j]
        return (rq * rk).sum()

    assert torch.allclose(score(5, 2), score(20, 17), atol=1e-5)
    assert not torch.allclose(score(5, 2), score(5, 4), atol=1e-3)
    assert torch.allclose(apply_rope(q.expand(1, 1, 32, 8), cos, sin)[0, 0, 0], q)  # position 0: identity


@pytest.mark.parametrize("family", family_names())
def test_pure_bf16_weights_as_a_bf16_engine_casts_them(family):
    torch.manual_seed(0)
    cfg = family_config(family, **({"softmax": True} if family == "mixer" else {}))  # the softmax path too
    model = build_model(cfg)
    ids = torch.randint(0, cfg.vocab_size, (2, cfg.n_ctx))
    fp32 = model(ids, labels=ids).loss.item()
    model = model.to(torch.bfloat16)
    out = model(ids, labels=ids)
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.loss)
    assert abs(out.loss.item() - fp32) < 0.05 * fp32
    out.loss.backward()
    assert all(p.grad.dtype == torch.bfloat16 for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("family", family_names())
def test_the_hamming_metric_runs_on_every_family_through_the_interface(family):
    """eval.hamming uses only embed / forward_blocks / embedding: any registered family works,
    reproducibly, and the descent reduces the L1 distance to the block output."""
    from eval.hamming import hamming

    torch.manual_seed(0)
    model = build_model(family_config(family))
    ids = torch.randint(0, model.cfg.vocab_size, (2, model.cfg.n_ctx), generator=torch.Generator().manual_seed(1))
    start = hamming(model, ids, depth=1, steps=1, batch_size=2)
    run, again = (hamming(model, ids, depth=1, steps=40, batch_size=2) for _ in range(2))
    assert run.per_sample == again.per_sample and all(0.0 <= h <= 1.0 for h in run.per_sample)
    assert run.final_l1 < start.final_l1
