"""The paper's other systems through the real trainer (issue 11): each trains on real shards (bf16), the
autoencoder resumes exactly after a SIGKILL of a 2-rank ZeRO-3 run, every committed config of the systems
loads, and configs they cannot train fail at start with a message naming the key and the fix."""
from __future__ import annotations

import os
import signal
import subprocess

import pytest
import torch
from torch import nn

from pretrain.config import RunConfig
from pretrain.models.registry import Family, register, unregister
from pretrain.objectives import build_objective
from pretrain.train import EXIT_BAD_INPUT, main
from stackcore.config import ConfigError, load_config
from stackcore.rundir import read_metrics
from test_train_resume import latest, wait_for
from toy_family import RunningMeanCost
from train_fixtures import REPO_ROOT, child_env, losses, prepped_corpus, reference_run, run_args, torchrun

SYSTEMS = {"autoencoder": ["--objective.name", "autoencoder", "--objective.encoder_layers", "1"],
           "completion": ["--objective.name", "completion"],
           "mtp": ["--objective.name", "mtp", "--objective.predict", "3"],
           "bidirectional": ["--model.bidirectional", "true"]}
AUTOENCODER_2RANK = ("--objective.name", "autoencoder", "--deepspeed.zero_stage", "3")


@pytest.mark.parametrize("system", list(SYSTEMS))
def test_each_system_trains_in_bf16_and_validates(system, tmp_path_factory, tmp_path):
    args = run_args(prepped_corpus(tmp_path_factory), tmp_path, system, "--train.steps", "6", "--train.lr", "1e-2",
                    "--train.precision", "bf16", "--checkpoint.every", "0", *SYSTEMS[system])
    assert main(args) == 0
    rows = read_metrics(tmp_path / system)
    train = [r["train_loss"] for r in rows if r.get("train_loss") is not None]
    assert len(train) == 6 and train[-1] < train[0]
    final = [r for r in rows if "val_loss" in r][-1]
    assert 0 < final["val_loss"] < 11.0  # below ln(50257) = 10.8 + noise: the objective's own targets
    if system == "mtp":
        assert final["val_head1_loss"] > 0 and final["val_head2_loss"] > 0


def test_autoencoder_two_ranks_zero3_killed_then_resumed_is_exact(tmp_path_factory, tmp_path):
    reference = losses(reference_run(tmp_path_factory, 2, 3, *AUTOENCODER_2RANK))
    args = run_args(prepped_corpus(tmp_path_factory), tmp_path, "killed", "--train.steps", "6",
                    "--checkpoint.every", "2", *AUTOENCODER_2RANK)
    run_dir = tmp_path / "killed"
    proc = subprocess.Popen(torchrun(2, args + ["--train.debug_step_sleep_s", "0.6"]), cwd=REPO_ROOT,
                            env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    wait_for(lambda: latest(run_dir) == "step00000002", proc)
    os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both ranks, mid-run
    proc.wait(timeout=60)
    assert max(r["step"] for r in read_metrics(run_dir)) < 6
    done = subprocess.run(torchrun(2, args), cwd=REPO_ROOT, env=child_env(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    resumed = losses(run_dir)
    assert sorted(resumed) == list(range(1, 7))
    assert [resumed[s] for s in range(3, 7)] == [reference[s] for s in range(3, 7)]


SYSTEM_CONFIGS = sorted(p.name for system in ("autoencoder", "completion", "mtp", "bidirectional")
                        for p in (REPO_ROOT / "configs/runs").glob(f"{system}-*.toml"))


def test_every_system_has_a_tiny_and_a_paper_config_per_family():
    expected = {f"{s}-{f}-{size}.toml" for s in ("autoencoder", "completion", "mtp", "bidirectional")
                for f in ("mixer", "llama", "gpt") for size in ("tiny", "paper")}
    assert set(SYSTEM_CONFIGS) == expected


@pytest.mark.parametrize("name", SYSTEM_CONFIGS)
def test_system_configs_load_and_count_their_flops(name):
    cfg = load_config(RunConfig, REPO_ROOT / "configs/runs" / name)
    objective = build_objective(cfg)
    system = name.split("-")[0]
    assert objective.name == ("next_token" if system == "bidirectional" else system)
    assert cfg.model.bidirectional == (system == "bidirectional")
    plain = load_config(RunConfig, REPO_ROOT / "configs/runs" / name, ["--model.bidirectional", "false"])
    plain.objective = {"name": "next_token"}
    # every system costs more per sample than the plain causal model of the same [model]
    assert objective.flops_per_sample() > build_objective(plain).flops_per_sample()


@pytest.mark.parametrize("extra, message", [
    (["--objective.name", "mtp", "--objective.predict", "32"], "objective.predict must be in"),
    (["--objective.name", "mtp", "--model.bidirectional", "true"], "head 1 must predict"),
    (["--objective.name", "autoencoder", "--model.bidirectional", "true"], "set model.bidirectional = false"),
    (["--objective.name", "autoencoder", "--objective.encoder_layer", "2"], "encoder_layers"),
    (["--model.bidirectional", "true", "--model.softmax", "true"], "set model.softmax = false"),
    (["--model.bidirectional", "true", "--model.mixing", "toeplitz"], "bidirectional = true"),
    (["--model.bidirectional", "true", "--model.row_sum_one", "true"], "bidirectional = true"),
])
def test_configs_a_system_cannot_train_fail_at_start(extra, message, tmp_path_factory, tmp_path, capsys):
    args = run_args(prepped_corpus(tmp_path_factory), tmp_path, "bad", *extra)
    assert main(args) == EXIT_BAD_INPUT
    assert message in capsys.readouterr().err
    assert not (tmp_path / "bad" / "checkpoints").exists()  # refused before any training


class NoBlocksModel(nn.Module):
    """A family model without the CausalLM parts (embed/forward_blocks/...): a whole-sequence black box."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.table = nn.Embedding(cfg.vocab_size, cfg.vocab_size)

    def forward(self, input_ids, labels=None):
        return self.table(input_ids)


def test_a_family_without_the_wrapper_parts_is_refused_by_name():
    from pretrain.models.encoder_decoder import EncoderDecoder
    from test_models_variants import tiny_config
    register(Family("no_blocks", model=NoBlocksModel, cost=RunningMeanCost()))
    try:
        with pytest.raises(ConfigError, match="'no_blocks' does not support an encoder-decoder.*forward_blocks"):
            EncoderDecoder(tiny_config(family="no_blocks"), 1, 1, "last_token")
    finally:
        unregister("no_blocks")
    assert torch.is_tensor(NoBlocksModel(tiny_config()).table.weight)


def test_eval_compare_and_eval_loss_on_the_systems(tmp_path_factory, tmp_path):
    from eval.runs import CompareError, check_comparable, load_runs
    plain = reference_run(tmp_path_factory, 1, 0)
    corpus = prepped_corpus(tmp_path_factory)
    for name, extra in (("mtp", SYSTEMS["mtp"]), ("ae", SYSTEMS["autoencoder"]), ("bi", SYSTEMS["bidirectional"])):
        assert main(run_args(corpus, tmp_path, name, "--train.steps", "2", "--checkpoint.every", "0", *extra)) == 0
    check_comparable(load_runs([plain, tmp_path / "mtp"]))  # val_loss of both: next-token CE on one set
    for other in ("ae", "bi"):
        with pytest.raises(CompareError, match="validation targets"):
            check_comparable(load_runs([plain, tmp_path / other]))
    # the export / `eval loss` path rebuilds the objective's model (the encoder-decoder), not a plain LM
    from eval.loss import checkpoint_loss
    final = [r for r in read_metrics(tmp_path / "ae") if "val_loss" in r][-1]["val_loss"]
    assert checkpoint_loss(tmp_path / "ae", corpus, progress=False)["loss"] == pytest.approx(final, rel=1e-5)


def test_mtp_trunk_starts_from_a_causal_run(tmp_path_factory, tmp_path):
    from pretrain.export import export, load_model
    plain = reference_run(tmp_path_factory, 1, 0)
    args = run_args(prepped_corpus(tmp_path_factory), tmp_path, "mtp-init", "--train.steps", "1",
                    "--checkpoint.every", "0", *SYSTEMS["mtp"], "--init.from", str(plain),
                    "--init.freeze_embedding", "true")
    assert main(args) == 0
    source, _ = load_model(export(plain, tmp_path / "plain-export"))
    tuned, _ = load_model(export(tmp_path / "mtp-init", tmp_path / "mtp-export"))
    assert torch.equal(tuned.trunk.embedding.weight, source.embedding.weight)  # loaded, then frozen
    assert not torch.equal(tuned.trunk.lm_head.weight, source.lm_head.weight)  # trained one step
