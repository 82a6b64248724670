"""The wrapper models of the paper's other systems (issue 11), for every family: the autoencoder sees
the input only through one vector, one-step completion never reads the second half, the bidirectional
model reads every token but t+1 (exactly), multi-token heads, and the FLOP cost model of each wrapper
against FlopCounterMode (within 2%)."""
from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from pretrain.models.bidirectional import build_bidirectional
from pretrain.models.encoder_decoder import EncoderDecoder, autoencoder_labels, completion_labels
from pretrain.models.multi_token import MultiTokenHeads, shifted_labels
from pretrain.models import build_model
from pretrain.models import objective_flops as of
from test_models_variants import tiny_config

FAMILIES = [dict(family="mixer"), dict(family="llama", heads=4), dict(family="gpt", heads=4)]
MIXER_FORMS = [dict(family="mixer", expansion=2), dict(family="mixer", kernel=2, heads=2),
               dict(family="mixer", tie_embeddings=True, final_norm=True)]
IDS = [f"{o['family']}-{'-'.join(f'{k}{v}' for k, v in o.items() if k != 'family') or 'plain'}"
       for o in FAMILIES + MIXER_FORMS]


def family_params(options=None):
    options = options or FAMILIES + MIXER_FORMS
    return pytest.mark.parametrize("overrides", options, ids=IDS[:len(options)])


def random_ids(cfg, batch=2, seed=1):
    return torch.randint(0, cfg.vocab_size, (batch, cfg.n_ctx), generator=torch.Generator().manual_seed(seed))


def replace_encoder_output(model, states):
    """Forces the encoder's output (what the bottleneck reads) to `states`, whatever the input."""
    return model.encoder.blocks[-1].register_forward_hook(lambda *_: states)


@family_params()
def test_autoencoder_decoder_sees_the_input_only_through_the_last_vector(overrides):
    torch.manual_seed(0)
    cfg = tiny_config(**overrides)
    model = EncoderDecoder(cfg, encoder_layers=2, decoder_layers=1, bottleneck="last_token").eval()
    ids = random_ids(cfg)
    base = model(ids).logits
    states = model.encode(ids)
    for p in range(cfg.n_ctx):  # every input token reaches the output (through the vector)
        changed = ids.clone()
        changed[:, p] = (changed[:, p] + 1) % cfg.vocab_size
        assert not torch.equal(model.encode(changed)[:, -1], states[:, -1]), f"token {p} missed the vector"
        assert not torch.equal(model(changed).logits, base), f"token {p} did not reach the output"
    other = random_ids(cfg, seed=2)
    # only the last position's vector matters: noise elsewhere, input a's last vector -> a's output
    noisy = torch.randn_like(states)
    noisy[:, -1] = states[:, -1]
    handle = replace_encoder_output(model, noisy)
    assert torch.equal(model(other).logits, base)
    handle.remove()
    # zero vector: the output no longer depends on the input at all
    handle = replace_encoder_output(model, torch.zeros_like(states))
    assert torch.equal(model(ids).logits, model(other).logits)
    handle.remove()


@family_params()
def test_completion_never_reads_the_second_half(overrides):
    torch.manual_seed(0)
    cfg = tiny_config(**overrides)
    model = EncoderDecoder(cfg, encoder_layers=1, decoder_layers=2, bottleneck="first_half").eval()
    ids, half = random_ids(cfg), cfg.n_ctx // 2
    base = model(ids).logits
    changed = ids.clone()
    changed[:, half:] = random_ids(cfg, seed=3)[:, half:]
    assert torch.equal(model(changed).logits, base), "the second half leaked into the completion"
    for p in (0, half - 1):
        changed = ids.clone()
        changed[:, p] = (changed[:, p] + 1) % cfg.vocab_size
        assert not torch.equal(model(changed).logits[:, half:], base[:, half:]), f"prompt token {p} unused"


def test_objective_labels_follow_the_real_tokens():
    ids = torch.tensor([[5, 6, 7, 8, 0, 0]])
    next_labels = torch.tensor([[6, 7, 8, 9, -100, -100]])  # document mode, right padding
    assert autoencoder_labels(ids, next_labels).tolist() == [[5, 6, 7, 8, -100, -100]]
    assert completion_labels(ids, next_labels).tolist() == [[-100, -100, -100, 8, -100, -100]]
    assert shifted_labels(next_labels, 2).tolist() == [[8, 9, -100, -100, -100, -100]]


@family_params()
def test_bidirectional_reads_every_token_but_the_target_exactly(overrides):
    torch.manual_seed(0)
    cfg = tiny_config(**overrides)
    model = build_bidirectional(cfg).eval()
    ids = random_ids(cfg, batch=1)
    base = model(ids).logits
    t_len = cfg.n_ctx
    for t in range(t_len - 1):
        changed = ids.clone()
        changed[:, t + 1] = (changed[:, t + 1] + 1) % cfg.vocab_size
        out = model(changed).logits
        assert torch.equal(out[:, t], base[:, t]), f"token {t + 1} leaked into its own prediction at {t}"
        for p in {t + 2, t_len - 1, 0, t} & set(range(t_len)) - {t + 1}:
            changed = ids.clone()
            changed[:, p] = (changed[:, p] + 1) % cfg.vocab_size
            assert not torch.equal(model(changed).logits[:, t], base[:, t]), f"position {t} ignores token {p}"


def test_multi_token_head_zero_is_the_trunk_and_losses_sum():
    torch.manual_seed(0)
    cfg = tiny_config(family="mixer")
    torch.manual_seed(0)
    trunk = build_model(cfg)
    plain = trunk(random_ids(cfg)).logits
    model = MultiTokenHeads(trunk, predict=3)
    ids = random_ids(cfg)
    labels = torch.roll(ids, -1, dims=1)
    out = model(ids, labels=labels)
    assert torch.equal(out.logits, plain)
    assert len(out.head_losses) == 3
    assert torch.allclose(out.loss, sum(out.head_losses))
    assert torch.allclose(out.head_losses[0], trunk(ids, labels=labels).loss)


def measured(model, ids, labels):
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(ids, labels=labels).loss.backward()
    return counter.get_total_flops()


@family_params()
@pytest.mark.parametrize("system", ["autoencoder", "completion", "bidirectional", "mtp"])
def test_wrapper_flops_match_flop_counter(system, overrides):
    torch.manual_seed(0)
    cfg = tiny_config(**overrides)
    if system == "bidirectional":
        model, analytic = build_bidirectional(cfg), of.bidirectional_forward_flops(cfg)
    elif system == "mtp":
        model, analytic = MultiTokenHeads(build_model(cfg), 3), of.multi_token_forward_flops(cfg, 3)
    else:
        model = EncoderDecoder(cfg, 2, 3, "last_token" if system == "autoencoder" else "first_half")
        analytic = of.encoder_decoder_forward_flops(cfg, 2, 3)
    ids = random_ids(cfg)
    tokens = ids.numel()
    assert measured(model, ids, ids) == pytest.approx(of.training(analytic) * tokens, rel=0.02)


@family_params(FAMILIES)
def test_bidirectional_flag_builds_two_streams_and_counts_them(overrides):
    from pretrain.models.bidirectional import BidirectionalMixer, BidirectionalStacks
    from pretrain.models.flops import training_flops_per_token
    cfg = tiny_config(bidirectional=True, **overrides)
    model = build_model(cfg)
    assert isinstance(model, BidirectionalMixer if cfg.family == "mixer" else BidirectionalStacks)
    assert training_flops_per_token(cfg) == of.training(of.bidirectional_forward_flops(cfg))
    causal = tiny_config(**overrides)
    head = 3 * 2 * cfg.d_model * cfg.vocab_size
    assert training_flops_per_token(cfg) - head == 2 * (training_flops_per_token(causal) - head)


def test_bidirectional_refuses_a_softmax_mixer_naming_the_keys():
    from stackcore.config import ConfigError
    with pytest.raises(ConfigError, match="bidirectional = true with model.softmax = true.*set model.softmax = false"):
        build_model(tiny_config(family="mixer", softmax=True, bidirectional=True))
