"""The objective seam: an objective added as one class (registered here, as a file under
pretrain/objectives/ would be) trains end to end through pretrain.train and reports its own metrics; its
own keys are typed; unknown names and keys fail naming the key."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from pretrain.config import RunConfig
from pretrain.objectives import available, build_objective, register
from pretrain.objectives.next_token import NextToken, split_pairs
from pretrain.train import EXIT_BAD_INPUT, main
from stackcore.config import ConfigError, load_config
from stackcore.rundir import read_metrics
from train_fixtures import prepped_corpus, run_args


@register
class FirstHalf(NextToken):
    """The toy of docs/extending.md: next-token prediction on the first `fraction` of positions only,
    plus a metric of its own (the share of targets kept)."""
    name = "first_half_toy"

    @dataclass
    class Options:
        fraction: float = 0.5

    def _mask(self, batch):
        inputs, labels = split_pairs(batch)
        keep = int(labels.shape[1] * self.options.fraction)
        labels = labels.clone()
        labels[:, keep:] = -100
        return inputs, labels

    def loss(self, model, batch):
        return super().loss(model, self._mask(batch))

    def eval_sums(self, model, batch):
        sums = super().eval_sums(model, self._mask(batch))
        sums["all_targets"] = int((split_pairs(batch)[1] != -100).sum())
        return sums

    def sum_keys(self):
        return super().sum_keys() + ["all_targets"]

    def metrics(self, sums, val):
        return {**super().metrics(sums, val), "val_kept_share": sums["targets"] / sums["all_targets"]}


def test_toy_objective_trains_and_reports_its_metrics(tmp_path_factory, tmp_path):
    corpus = prepped_corpus(tmp_path_factory)
    args = run_args(corpus, tmp_path, "toy", "--train.steps", "3", "--objective.name", "first_half_toy",
                    "--objective.fraction", "0.25", "--log.quiet", "true")
    assert main(args) == 0
    rows = read_metrics(tmp_path / "toy")
    val = [r for r in rows if r.get("val_loss") is not None]
    assert val and 0.2 < val[-1]["val_kept_share"] < 0.3  # a quarter of the positions, its own metric
    assert all(r["train_loss"] is not None for r in rows if "train_loss" in r)
    config = (tmp_path / "toy" / "config.toml").read_text()
    assert 'name = "first_half_toy"' in config and "fraction = 0.25" in config


def test_objective_keys_are_typed_and_names_checked():
    cfg = load_config(RunConfig, None, ["--objective.name", "first_half_toy", "--objective.fraction", "0.75"])
    assert build_objective(cfg).options.fraction == 0.75
    assert isinstance(build_objective(load_config(RunConfig)), NextToken)  # the default
    with pytest.raises(ConfigError, match="fractoin.*did you mean 'fraction'"):
        build_objective(load_config(RunConfig, None, ["--objective.name", "first_half_toy",
                                                      "--objective.fractoin", "0.5"]))
    with pytest.raises(ConfigError, match="expected a number"):
        build_objective(load_config(RunConfig, None, ["--objective.name", "first_half_toy",
                                                      "--objective.fraction", "half"]))
    with pytest.raises(ConfigError, match="not a known objective.*next_token"):
        build_objective(load_config(RunConfig, None, ["--objective.name", "next_tokn"]))
    assert "next_token" in available()


def test_unknown_objective_exits_2(tmp_path_factory, tmp_path, capsys):
    corpus = prepped_corpus(tmp_path_factory)
    assert main(run_args(corpus, tmp_path, "bad", "--objective.name", "nope")) == EXIT_BAD_INPUT
    assert "objective.name='nope'" in capsys.readouterr().err


def test_next_token_loss_matches_model_loss():
    """The objective owns the loss; it equals the models' own `labels=` loss bit for bit."""
    from pretrain.models import build_model
    cfg = load_config(RunConfig, None, ["--model.d_model", "16", "--model.n_ctx", "8", "--model.vocab_size", "50"])
    torch.manual_seed(0)
    model = build_model(cfg.model)
    inputs = torch.randint(0, 50, (3, 8))
    labels = torch.randint(0, 50, (3, 8))
    labels[0, :4] = -100
    loss, n = build_objective(cfg).loss(model, (inputs, labels))
    assert torch.equal(loss, model(inputs, labels=labels).loss) and int(n) == 20


def test_eval_loss_reproduces_the_logged_validation_exactly(tmp_path_factory):
    """`python -m eval loss` and training validation are one function: with the same batching the final
    checkpoint's numbers are EQUAL to the logged ones."""
    from eval.loss import checkpoint_loss
    from train_fixtures import reference_run
    run_dir = reference_run(tmp_path_factory, 1, 0)
    last = [r for r in read_metrics(run_dir) if r.get("val_loss") is not None][-1]
    got = checkpoint_loss(run_dir, prepped_corpus(tmp_path_factory), batch=2, progress=False)  # micro_batch 2
    assert (got["loss"], got["bpb"], got["tokens"]) == (last["val_loss"], last["val_bpb"], last["val_tokens"])


def test_bits_per_byte_count_the_bytes_of_the_evaluated_tokens(tmp_path_factory):
    """Token byte lengths from the manifest's tokenizer add up to the split's UTF-8 bytes (EOS counts 0),
    and a logged val_bpb is the summed nats over the bytes of exactly the targets evaluated."""
    import math

    import numpy as np
    from webdataset.tariterators import tarfile_samples

    from data_prep.format import decode_sample, read_manifest, shard_paths
    from pretrain.validation import token_byte_lengths
    from train_fixtures import reference_run
    corpus = prepped_corpus(tmp_path_factory)
    manifest = read_manifest(corpus)
    lengths = token_byte_lengths(manifest, 50257)
    total = 0
    for path in shard_paths(corpus, manifest, "val"):
        for sample in tarfile_samples([{"url": str(path)}]):
            tokens, _ = decode_sample(sample, manifest["dtype"])
            total += int(lengths[torch.as_tensor(tokens.astype(np.int64))].sum())
    assert total == manifest["totals"]["splits"]["val"]["utf8_bytes"] and int(lengths[manifest["eos_id"]]) == 0
    row = [r for r in read_metrics(reference_run(tmp_path_factory, 1, 0)) if r.get("val_loss") is not None][-1]
    assert 0 < row["val_bytes"] and row["val_tokens"] < 1024  # data.val_tokens = 1024
    assert row["val_bpb"] == pytest.approx(row["val_loss"] * row["val_tokens"] / math.log(2) / row["val_bytes"])
