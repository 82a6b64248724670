"""The shared typed-config mechanism: TOML -> nested dataclasses, overrides, clear errors."""
import pytest

from pretrain.config import RunConfig
from stackcore.config import ConfigError, dump_toml, load_config, parse_overrides


def test_overrides_parse_types():
    assert parse_overrides(["--train.lr", "3e-4", "--model.norm=false", "--run.name", "abc"]) == {
        "train": {"lr": 3e-4}, "model": {"norm": False}, "run": {"name": "abc"}}


def test_load_toml_with_overrides_and_round_trip(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('[model]\nfamily = "llama"\nd_model = 64\n[train]\nsteps = 7\n')
    cfg = load_config(RunConfig, path, ["--train.lr", "0.001", "--model.heads", "4"])
    assert (cfg.model.family, cfg.model.d_model, cfg.model.heads, cfg.train.steps, cfg.train.lr) == (
        "llama", 64, 4, 7, 0.001)
    again = tmp_path / "again.toml"
    again.write_text(dump_toml(cfg, header="resolved"))
    assert load_config(RunConfig, again) == cfg


def test_unknown_key_names_closest(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.lrr.*did you mean 'lr'"):
        load_config(RunConfig, None, ["--train.lrr", "1e-3"])
    with pytest.raises(ConfigError, match=r"unknown key 'modle'.*did you mean 'model'"):
        load_config(RunConfig, None, ["--modle.d_model", "3"])


def test_wrong_type_and_bad_values():
    with pytest.raises(ConfigError, match=r"train\.steps: expected an integer"):
        load_config(RunConfig, None, ["--train.steps", "many"])
    with pytest.raises(ConfigError, match=r"model\.family"):
        load_config(RunConfig, None, ["--model.family", "rnn"])
    with pytest.raises(ConfigError, match="divisible"):
        load_config(RunConfig, None, ["--model.d_model", "10", "--model.heads", "4"])


def test_include_merges_base_file(tmp_path):
    (tmp_path / "base.toml").write_text('[model]\nfamily = "gpt"\nd_model = 32\n')
    (tmp_path / "run.toml").write_text('include = "base.toml"\n[model]\nd_model = 48\n')
    cfg = load_config(RunConfig, tmp_path / "run.toml")
    assert (cfg.model.family, cfg.model.d_model) == ("gpt", 48)
