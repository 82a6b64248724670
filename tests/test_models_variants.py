"""Tiny model configs shared by the models/FLOPs tests (every family and every mixer option), and a
check that each variant really is a distinct model."""
from __future__ import annotations

import dataclasses

import pytest

from pretrain.config import ModelConfig

TINY = dict(d_model=32, n_layers=2, n_ctx=16, vocab_size=97)

# (id, overrides): each mixer option alone, a few combinations, and the two transformers.
VARIANTS = [
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
    ("llama", dict(family="llama", heads=4)),
    ("llama-tied", dict(family="llama", heads=2, tie_embeddings=True)),
    ("gpt", dict(family="gpt", heads=4)),
    ("gpt-dropout", dict(family="gpt", heads=2, dropout=0.1)),
]
MIXER_VARIANTS = [v for v in VARIANTS if v[1]["family"] == "mixer"]


def tiny_config(**overrides) -> ModelConfig:
    cfg = ModelConfig(**{**TINY, **overrides})
    cfg.validate()
    return cfg


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
