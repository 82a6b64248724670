"""Training options give the expected numerics: activation checkpointing changes nothing, a FLOP budget
stops at the right step, document mode and the Llama family train through the same loop, and
per-layer statistics under ZeRO-3 match those of one process."""
from __future__ import annotations

import json

import pytest

from pretrain.models.flops import training_flops_per_token
from pretrain.train import main
from stackcore.rundir import read_metrics
from train_fixtures import REPO_ROOT, losses, prepped_corpus, reference_run, run_args


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return prepped_corpus(tmp_path_factory)


def test_activation_checkpointing_gives_the_same_losses(tmp_path_factory, tmp_path):
    reference = losses(reference_run(tmp_path_factory, 1, 0))
    args = run_args(prepped_corpus(tmp_path_factory), tmp_path, "ac", "--train.steps", "6",
                    "--checkpoint.every", "2", "--train.activation_checkpointing", "true")
    assert main(args) == 0
    got = losses(tmp_path / "ac")
    assert got == pytest.approx(reference, abs=1e-6)


def test_flop_budget_stops_the_run(corpus, tmp_path):
    from pretrain.config import RunConfig
    from stackcore.config import load_config

    cfg = load_config(RunConfig, None, run_args(corpus, tmp_path, "x")[2:])
    per_step = training_flops_per_token(cfg.model, cfg.model.n_ctx) * cfg.train.global_batch * cfg.model.n_ctx
    assert main(run_args(corpus, tmp_path, "budget", "--train.steps", "100",
                         "--train.budget_flops", str(2.5 * per_step))) == 0
    rows = read_metrics(tmp_path / "budget")
    assert rows[-1]["step"] == 3 and rows[-1]["flops"] == pytest.approx(3 * per_step)
    assert json.loads((tmp_path / "budget" / "status.json").read_text())["state"] == "completed"


def test_document_mode_llama_run(corpus, tmp_path):
    args = run_args(corpus, tmp_path, "doc", "--data.mode", "document", "--data.pad_side", "left",
                    "--train.steps", "2", "--model.heads", "2")
    args[1] = str(REPO_ROOT / "configs/runs/tiny-llama.toml")
    assert main(args) == 0
    rows = read_metrics(tmp_path / "doc")
    assert [r["step"] for r in rows] == [1, 2] and all(r["train_loss"] > 5 for r in rows)
    assert rows[-1]["val_loss"] > 5 and rows[-1]["val_bpb"] > 1


def test_layer_statistics_agree_across_zero_stages(tmp_path_factory):
    one = [r for r in read_metrics(reference_run(tmp_path_factory, 1, 0)) if "layer_stats" in r]
    three = [r for r in read_metrics(reference_run(tmp_path_factory, 2, 3)) if "layer_stats" in r]
    assert len(one) == len(three) == 2
    for a, b in zip(one, three):
        assert a["layer_stats"] == pytest.approx(b["layer_stats"], rel=1e-4)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
