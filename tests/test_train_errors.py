"""Bad input gives one clear error (exit code EXIT_BAD_INPUT, message naming the thing and the fix):
bad config values, a mismatched tokenizer, a missing shard, a corrupt checkpoint; failures leave
error.txt and status.json {state: failed}. Non-finite losses are skipped, then stop the run."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from pretrain.guard import NonFiniteGuard, NonFiniteLossError
from pretrain.train import EXIT_BAD_INPUT, main
from train_fixtures import prepped_corpus, reference_run, run_args


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return prepped_corpus(tmp_path_factory)


@pytest.mark.parametrize("override, message", [
    (["--deepspeed.zero_stage", "5"], "deepspeed.zero_stage must be 0, 1, 2 or 3"),
    (["--train.global_batch", "5"], r"train.global_batch=5 must be a multiple of train.micro_batch"),
    (["--train.lrr", "1"], "unknown key 'train.lrr': did you mean 'lr'"),
    (["--data.mode", "packd"], r"data.mode: 'packd' is not one of \['packed', 'document'\]"),
    (["--data.tokenizer", "cl100k_base"], r"manifest.json: tokenized with 'r50k_base' but the run expects"),
    (["--model.vocab_size", "8000"], r"has 50257 tokens .* model.vocab_size=8000"),
])
def test_bad_config_or_data_is_one_clear_error(corpus, tmp_path, capsys, override, message):
    assert main(run_args(corpus, tmp_path, "bad", *override)) == EXIT_BAD_INPUT
    import re
    assert re.search(message, capsys.readouterr().err)


def test_missing_shard_names_the_file(corpus, tmp_path, capsys):
    copy = tmp_path / "prep"
    shutil.copytree(corpus, copy)
    shard = json.loads((copy / "manifest.json").read_text())["shards"][1]["name"]
    (copy / shard).unlink()
    assert main(run_args(copy, tmp_path, "noshard")) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert f"{copy / shard}: shard listed in the manifest is missing" in err and "--resume" in err


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_checkpoint_is_named_and_recorded(tmp_path_factory, tmp_path, capsys, damage):
    run = tmp_path / "ref"
    shutil.copytree(reference_run(tmp_path_factory, 1, 0), run)
    corpus = prepped_corpus(tmp_path_factory)
    ckpt = run / "checkpoints" / "step00000006"
    states = next((ckpt / "ds").glob("*model_states.pt"))
    data = states.read_bytes()
    states.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\0" * len(data))
    args = run_args(corpus, tmp_path, "ref", "--train.steps", "8")
    assert main(args) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    expected = "missing or truncated" if damage == "truncate" else "cannot load the DeepSpeed checkpoint"
    assert str(ckpt) in err and expected in err and "--checkpoint.resume none" in err
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "failed" and expected in status["error"]
    assert "Traceback" in (run / "error.txt").read_text()


def test_half_written_checkpoint_is_never_picked_up(tmp_path_factory, tmp_path):
    from pretrain.checkpoint import resolve
    run = tmp_path / "ref"
    shutil.copytree(reference_run(tmp_path_factory, 1, 0), run)
    root = run / "checkpoints"
    assert [p.name for p in sorted(root.glob("step*"))] == ["step00000002", "step00000004", "step00000006"]
    shutil.copytree(root / "step00000006", root / ".partial-step00000008")  # a save killed before its rename
    assert resolve(root, "auto").name == "step00000006"
    assert resolve(root, "none") is None


def test_nonfinite_guard_zeroes_gradients_and_stops_after_a_streak():
    layer = torch.nn.Linear(3, 2)
    guard = NonFiniteGuard(layer, max_in_a_row=2)
    guard.active = True
    (layer(torch.ones(1, 3)).sum() * float("nan")).backward()
    assert all(torch.equal(p.grad, torch.zeros_like(p)) for p in layer.parameters())
    guard.active = False
    layer.zero_grad()
    layer(torch.ones(1, 3)).sum().backward()
    assert layer.weight.grad.abs().sum() > 0
    guard.record(True, 1)
    guard.record(False, 2)  # a good step resets the streak
    guard.record(True, 3)
    with pytest.raises(NonFiniteLossError, match="2 non-finite losses in a row"):
        guard.record(True, 4)


def test_nonfinite_losses_are_skipped_then_stop_the_run(corpus, tmp_path, capsys):
    args = run_args(corpus, tmp_path, "nonfinite", "--train.steps", "12", "--train.lr", "1e9", "--train.grad_clip", "0",
                    "--train.warmup", "0", "--train.max_nonfinite", "3")
    assert main(args) == EXIT_BAD_INPUT
    assert "3 non-finite losses in a row" in capsys.readouterr().err
    rows = [json.loads(line) for line in (tmp_path / "nonfinite" / "metrics.jsonl").read_text().splitlines()]
    skipped = [r for r in rows if r["train_loss"] is None]
    assert rows[0]["train_loss"] is not None and len(skipped) == 2 and skipped[-1]["skipped_steps"] == 2
    status = json.loads((tmp_path / "nonfinite" / "status.json").read_text())
    assert status["state"] == "failed" and "non-finite" in status["error"] and status["step"] == 3
