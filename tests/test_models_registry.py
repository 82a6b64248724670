"""The family registry: lookup with a closest-name error, options a family does not implement refused
with a clear error, registration refused without a cost model, build_model from a plain mapping, the
toy family of docs/extending.md registered in one file, and cost queries that stay torch-free."""
import dataclasses
import subprocess
import sys

import pytest
import torch
from torch import nn

import toy_family
from pretrain.config import ModelConfig, RunConfig
from pretrain.models import build_model
from pretrain.models.flops import param_counts, training_flops_per_token
from pretrain.models.registry import (BUILTIN_FAMILIES, CostModel, Family, FamilyError, family_names,
                                      get_family, register, unregister)
from stackcore.config import ConfigError, load_config
from conftest import REPO_ROOT
from test_models_variants import tiny_config


def test_builtins_come_first_and_an_unknown_family_names_the_closest():
    assert family_names()[:3] == list(BUILTIN_FAMILIES) == ["mixer", "llama", "gpt"]
    with pytest.raises(ConfigError, match=r"model.family = 'lama' is not a registered family: did you mean 'llama'"):
        load_config(RunConfig, None, ["--model.family", "lama"])
    with pytest.raises(ConfigError, match=r"registered: mixer, llama, gpt"):
        tiny_config(family="rnn")


@pytest.mark.parametrize("family, option, value, why", [
    ("gpt", "norm", False, "post-LayerNorm blocks always normalise"),
    ("gpt", "residual", False, "always add the residual"),
    ("gpt", "final_norm", True, "already ends in a LayerNorm"),
    ("gpt", "kernel", 3, "an option of mixer"),
    ("llama", "final_norm", True, "always ends in a final RMSNorm"),
    ("llama", "dropout", 0.1, "llama has no dropout"),
    ("llama", "softmax", True, "an option of mixer"),
    ("mixer", "dropout", 0.1, "the mixer has no dropout"),
    ("mixer", "rope_theta", 500.0, "no positional encoding"),
    ("running_mean", "norm", False, "an option of mixer, llama"),
])
def test_options_a_family_does_not_implement_are_refused(family, option, value, why):
    with pytest.raises(ConfigError) as err:
        load_config(RunConfig, None, ["--model.family", family, f"--model.{option}", repr(value).lower()])
    msg = str(err.value)
    assert f"model.{option} = " in msg and f"family '{family}' does not implement it" in msg and why in msg
    assert "remove the key or set it to" in msg


def test_the_options_each_family_implements_are_accepted():
    for family, option, value in [("gpt", "dropout", 0.1), ("llama", "norm", False), ("llama", "rope_theta", 500.0),
                                  ("mixer", "final_norm", True), ("mixer", "kernel", 2)]:
        cfg = tiny_config(family=family, heads=2 if family != "mixer" else 1, **{option: value})
        assert getattr(build_model(cfg).cfg, option) == value


def test_llama_without_norms_counts_no_norm_gains():
    cfg = tiny_config(family="llama", heads=4, norm=False)
    model = build_model(cfg)
    assert not any(isinstance(m, nn.RMSNorm) for m in model.modules())
    normed = tiny_config(family="llama", heads=4)
    assert param_counts(normed)["total"] - param_counts(cfg)["total"] == (2 * cfg.n_layers + 1) * cfg.d_model
    assert param_counts(cfg)["total"] == model.num_params()


def test_llama_odd_rotary_head_dim_is_a_config_error():
    with pytest.raises(ConfigError, match=r"must be even for llama's rotary embeddings"):
        tiny_config(family="llama", d_model=30, heads=2)


def test_build_model_takes_a_plain_mapping_of_the_model_section():
    section = {"family": "mixer", "d_model": 32, "n_layers": 2, "n_ctx": 16, "vocab_size": 97, "kernel": 2}
    torch.manual_seed(0)
    from_mapping = build_model(section)
    torch.manual_seed(0)
    from_config = build_model(ModelConfig(**section))
    assert from_mapping.cfg == from_config.cfg
    ids = torch.randint(0, 97, (1, 16))
    assert torch.equal(from_mapping(ids).logits, from_config(ids).logits)
    with pytest.raises(ConfigError, match=r"unknown key 'model.hedas': did you mean 'heads'"):
        build_model({**section, "hedas": 2})
    with pytest.raises(ConfigError, match=r"model.d_model: expected an integer"):
        build_model({**section, "d_model": "wide"})


class _NoCost:
    def layer_flops(self, cfg, t):
        return {}


def test_registration_without_a_cost_model_or_under_a_taken_name_is_refused():
    with pytest.raises(FamilyError, match=r"family 'nocost' has no cost model"):
        register(Family("nocost", model=nn.Module, cost=_NoCost()))
    with pytest.raises(TypeError):  # a cost model must implement every abstract term
        type("Partial", (CostModel,), {"layer_flops": lambda self, cfg, t: {}})()
    with pytest.raises(FamilyError, match=r"'mixer' is already registered"):
        register(dataclasses.replace(get_family("mixer")))
    with pytest.raises(FamilyError, match=r"option 'dropuot' is not a family-specific ModelConfig field"):
        register(Family("typo", model=nn.Module, cost=toy_family.RunningMeanCost(), options=frozenset({"dropuot"})))
    assert "nocost" not in family_names() and "typo" not in family_names()


def test_a_family_registered_at_run_time_builds_costs_and_can_be_removed():
    clone = dataclasses.replace(toy_family.RUNNING_MEAN, name="running_mean_copy")
    register(clone)
    try:
        cfg = tiny_config(family="running_mean_copy")
        model = build_model(cfg)
        assert isinstance(model, toy_family.RunningMean)
        assert model.num_params() == param_counts(cfg)["total"]
        assert training_flops_per_token(cfg) == 3 * cfg.n_layers * 2 * 32 * 32 + 3 * 2 * 32 * 97
    finally:
        unregister("running_mean_copy")
    with pytest.raises(ConfigError, match="not a registered family"):
        tiny_config(family="running_mean_copy")


def test_docs_show_the_toy_family_exactly_as_tested():
    """docs/extending.md's worked example is tests/toy_family.py's code, so the docs cannot drift."""
    docs = (REPO_ROOT / "docs" / "extending.md").read_text()
    source = (REPO_ROOT / "tests" / "toy_family.py").read_text()
    code = source.split('"""', 2)[2].strip()  # the module without its docstring
    assert code in docs


def test_cost_queries_and_config_validation_do_not_import_torch():
    script = ("import sys\nfrom pretrain.config import RunConfig\nfrom stackcore.config import load_config\n"
              "from pretrain.models.flops import memory_estimate, training_flops_per_token\n"
              "from pretrain.models.registry import family_names, get_family\n"
              "for f in family_names():\n"
              "    cfg = load_config(RunConfig, None, ['--model.family', f, '--model.heads', '2']).model\n"
              "    assert training_flops_per_token(cfg) > 0 and memory_estimate(cfg)['total'] > 0\n"
              "assert 'torch' not in sys.modules, 'a cost query imported torch'\n")
    subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, check=True, timeout=60)
