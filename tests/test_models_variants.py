"""Tiny model configs shared by the models/FLOPs tests (every registered family, every mixer option),
and a check that each variant really is a distinct model.

The family list comes from the registry: the tests register the toy family of docs/extending.md
(tests/toy_family.py), and any family without option variants below is tested at its defaults."""
from __future__ import annotations

import dataclasses

import pytest

import toy_family  # noqa: F401  (registers "running_mean": the registry-driven tests must pick it up)
from pretrain.config import ModelConfig
from pretrain.models.registry import family_names
from stackcore.config import ConfigError

TINY = dict(d_model=32, n_layers=2, n_ctx=16, vocab_size=97)

# (id, overrides): each mixer option alone, a few combinations, and the transformers' options.
OPTION_VARIANTS = [
    ("mixer", dict(family="mixer")),
    ("mixer-heads4", dict(family="mixer", heads=4)),
    ("mixer-expansion1", dict(family="mixer", expansion=1)),
    ("mixer-expansion2", dict(family="mixer", expansion=2)),
    ("mixer-kernel3", dict(family="mixer", kernel=3)),
    ("mixer-kernel4", dict(family="mixer", kernel=4)),
    ("mixer-softmax", dict(family="mixer", softmax=True)),
    ("mixer-nonorm", dict(family="mixer", norm=False)),
    ("mixer-noresidual", dict(family="mixer", residual=False)),
    ("mixer-linear", dict(family="mixer", linear=True)),
    ("mixer-tied-finalnorm", dict(family="mixer", tie_embeddings=True, final_norm=True)),
    ("mixer-all", dict(family="mixer", heads=2, expansion=2, kernel=2, softmax=True)),
    ("mixer-linear-heads-exp", dict(family="mixer", linear=True, heads=2, expansion=1)),
    # the improvement study's variants (pretrain/models/mixer_variants.py)
    ("mixer-running-mean", dict(family="mixer", mixing_init="running_mean")),
    ("mixer-running-mean-softmax-k2", dict(family="mixer", mixing_init="running_mean", softmax=True, kernel=2)),
    ("mixer-row-sum-one", dict(family="mixer", row_sum_one=True)),
    ("mixer-row-sum-one-heads-exp", dict(family="mixer", row_sum_one=True, heads=2, expansion=1, kernel=2)),
    ("mixer-decay", dict(family="mixer", distance_decay=True)),
    ("mixer-decay-heads-exp", dict(family="mixer", distance_decay=True, heads=2, expansion=2)),
    ("mixer-gate", dict(family="mixer", mixing_gate=True)),
    ("mixer-gate-decay-rows", dict(family="mixer", mixing_gate=True, distance_decay=True, row_sum_one=True)),
    ("mixer-hybrid", dict(family="mixer", attention_layers=(1,), attention_heads=2)),
    ("mixer-hybrid-gate-heads", dict(family="mixer", attention_layers=(0,), heads=2, mixing_gate=True)),
    ("mixer-toeplitz-heads-gate", dict(family="mixer", mixing="toeplitz", heads=2, mixing_gate=True)),
    ("llama", dict(family="llama", heads=4)),
    ("llama-tied", dict(family="llama", heads=2, tie_embeddings=True)),
    ("llama-nonorm", dict(family="llama", heads=4, norm=False)),
    ("llama-noresidual", dict(family="llama", heads=2, residual=False)),
    ("gpt", dict(family="gpt", heads=4)),
    ("gpt-dropout", dict(family="gpt", heads=2, dropout=0.1)),
]
VARIANTS = OPTION_VARIANTS + [(name, dict(family=name)) for name in family_names()
                              if name not in {v[1]["family"] for v in OPTION_VARIANTS}]
MIXER_VARIANTS = [v for v in VARIANTS if v[1]["family"] == "mixer"]


def tiny_config(**overrides) -> ModelConfig:
    cfg = ModelConfig(**{**TINY, **overrides})
    cfg.validate()
    return cfg


def family_config(family: str, heads: int = 2, **overrides) -> ModelConfig:
    """A tiny config of any registered family with `heads` heads where the family has heads (its
    validation refuses them otherwise, as the toy family's does), so generic tests need no family names."""
    try:
        return tiny_config(family=family, heads=heads, **overrides)
    except ConfigError as exc:
        if "model.heads" not in str(exc):
            raise
        return tiny_config(family=family, **overrides)


def test_every_registered_family_has_a_variant_and_the_toy_family_is_picked_up():
    assert {v[1]["family"] for v in VARIANTS} == set(family_names())
    assert "running_mean" in family_names()


def variant_params(variants=VARIANTS):
    return pytest.mark.parametrize("overrides", [v[1] for v in variants], ids=[v[0] for v in variants])


def with_(cfg: ModelConfig, **changes) -> ModelConfig:
    return dataclasses.replace(cfg, **changes)


def test_every_variant_builds_a_distinct_model():
    from pretrain.models import build_model
    from pretrain.models.flops import param_counts, training_flops_per_token

    import torch

    ids = torch.arange(16).view(1, 16) % 97
    signatures = set()
    for name, overrides in VARIANTS:
        cfg = tiny_config(**overrides)
        torch.manual_seed(0)
        model = build_model(cfg).eval()
        with torch.no_grad():  # same seed, same input: different wiring gives different logits
            logits = tuple(model(ids).logits[0, -1, :4].round(decimals=4).tolist())
        signatures.add((model.num_params(), training_flops_per_token(cfg), logits))
        assert model.num_params() == param_counts(cfg)["total"], name
    assert len(signatures) == len(VARIANTS)
