"""The streaming loader: packing, document mode, disjoint streams, worker/world invariance, exact resume,
the fixed validation set, and clear errors on a mismatched or damaged prep directory."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from data_prep.format import FormatError, read_manifest
from pretrain.config import RunConfig
from pretrain.data import Stream, TrainLoader, load_stream_state, save_stream_state
from pretrain.validation import validation_set
from pretrain.schedule import lr_multiplier, total_steps
from stackcore.config import load_config
from train_fixtures import prepped_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return prepped_corpus(tmp_path_factory)


def make_cfg(corpus, *extra):
    return load_config(RunConfig, None, ["--data.path", str(corpus), "--model.n_ctx", "32", "--train.micro_batch",
                                         "2", "--data.streams", "2", "--data.shuffle_buffer", "8", *extra])


def take(loader, n):
    return [torch.stack(next(loader)) for _ in range(n)]


def test_packed_windows_are_shifted_and_seeded(corpus):
    batches = take(TrainLoader(make_cfg(corpus), 0, 1), 6)
    for b in batches:
        inputs, labels = b
        assert inputs.shape == (2, 32) and (labels != -100).all()
        assert torch.equal(inputs[:, 1:], labels[:, :-1])  # labels are the next tokens, already aligned
    again = take(TrainLoader(make_cfg(corpus), 0, 1), 6)
    other = take(TrainLoader(make_cfg(corpus, "--run.seed", "1"), 0, 1), 6)
    assert all(torch.equal(a, b) for a, b in zip(batches, again))
    assert not all(torch.equal(a, b) for a, b in zip(batches, other))


def test_streams_read_disjoint_samples_covering_the_corpus(corpus):
    split = read_manifest(corpus)["totals"]["splits"]["train"]
    loader = TrainLoader(make_cfg(corpus, "--data.streams", "3"), 0, 1)
    per_stream = []
    for spec in loader.specs:
        stream, docs = Stream(spec), []
        while True:
            got = stream._next_documents()
            if stream.epoch > 0:  # wrapped: this sample already belongs to the next epoch
                break
            docs += got
        per_stream.append(docs)
    # each stream decodes only its share; together exactly one epoch of the train split
    assert all(per_stream) and sum(map(len, per_stream)) == split["documents"]
    assert sum(len(d) for docs in per_stream for d in docs) == split["tokens"]
    firsts = [docs[0].tobytes() for docs in per_stream]
    assert len(set(firsts)) == 3


def test_world_and_workers_do_not_change_the_global_batches(corpus):
    one = take(TrainLoader(make_cfg(corpus), 0, 1), 8)
    rank0, rank1 = TrainLoader(make_cfg(corpus), 0, 2), TrainLoader(make_cfg(corpus), 1, 2)
    two = [b for _ in range(4) for b in (torch.stack(next(rank0)), torch.stack(next(rank1)))]
    assert all(torch.equal(a, b) for a, b in zip(one, two))
    workers = take(TrainLoader(make_cfg(corpus, "--data.workers", "2"), 0, 1), 8)
    assert all(torch.equal(a, b) for a, b in zip(one, workers))


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_continues_exactly(corpus, tmp_path, workers):
    cfg = make_cfg(corpus, "--data.workers", str(workers))
    reference = take(TrainLoader(cfg, 0, 1), 40)  # long enough to wrap an epoch of a stream
    first = TrainLoader(cfg, 0, 1)
    take(first, 25)  # odd: the resumed loader must start at the second stream
    for stream, state in first.state_dict().items():
        save_stream_state(tmp_path / f"s{stream}.npz", state)
    states = {s: load_stream_state(tmp_path / f"s{s}.npz") for s in first.local}
    resumed = take(TrainLoader(cfg, 0, 1, states, first.consumed), 15)
    assert all(torch.equal(a, b) for a, b in zip(reference[25:], resumed))


@pytest.mark.parametrize("side", ["left", "right"])
def test_document_mode_pads_with_ignored_labels(corpus, side):
    loader = TrainLoader(make_cfg(corpus, "--data.mode", "document", "--data.pad_side", side,
                                  "--model.n_ctx", "256"), 0, 1)
    eos = read_manifest(corpus)["eos_id"]
    padded_rows = 0
    for inputs, labels in (next(loader) for _ in range(10)):
        for x, y in zip(inputs, labels):
            pads = (y == -100)
            real = (~pads).nonzero().flatten()
            assert len(real) > 0 and (real[-1] - real[0] + 1) == len(real)  # one contiguous document
            if pads.any():
                padded_rows += 1
                assert (pads[0] if side == "left" else pads[-1])
                assert (x[pads] == eos).all()
            assert torch.equal(x[real][1:], y[real][:-1])
    assert padded_rows > 0  # stories are shorter than 256 tokens: padding really happened


def test_validation_set_is_fixed_and_reports_bytes_per_token(corpus):
    a, bpt = validation_set(make_cfg(corpus, "--data.val_tokens", "1024"), read_manifest(corpus))
    b, _ = validation_set(make_cfg(corpus, "--data.val_tokens", "1024", "--run.seed", "5", "--data.streams", "4"),
                          read_manifest(corpus))
    assert torch.equal(a, b) and a.shape[1:] == (2, 32)
    assert 1000 <= int((a[:, 1] != -100).sum()) <= 1024 and 3.0 < bpt < 5.0


def test_mismatched_tokenizer_or_vocabulary_is_refused(corpus, tmp_path):
    with pytest.raises(FormatError, match=r"manifest.json: tokenized with 'r50k_base'.*data.tokenizer='cl100k_base'"):
        TrainLoader(make_cfg(corpus, "--data.tokenizer", "cl100k_base"), 0, 1)
    with pytest.raises(FormatError, match=r"50257 tokens.*model.vocab_size=8000"):
        TrainLoader(make_cfg(corpus, "--model.vocab_size", "8000"), 0, 1)


def test_missing_shard_is_named(corpus, tmp_path):
    copy = tmp_path / "prep"
    shutil.copytree(corpus, copy)
    shard = json.loads((copy / "manifest.json").read_text())["shards"][0]["name"]
    (copy / shard).unlink()
    with pytest.raises(FormatError, match=f"{shard}: shard listed in the manifest is missing"):
        TrainLoader(make_cfg(copy), 0, 1)


def test_schedules_and_budgets():
    assert [round(lr_multiplier(s, 10, 2, "linear"), 3) for s in (0, 1, 2, 6, 9)] == [0.5, 1.0, 1.0, 0.5, 0.125]
    assert lr_multiplier(2, 10, 2, "cosine") == 1.0 and lr_multiplier(10, 10, 2, "cosine", 0.1) == pytest.approx(0.1)
    assert lr_multiplier(7, 12, 2, "wsd", wsd_decay_fraction=0.2) == 1.0
    assert lr_multiplier(11, 12, 2, "wsd", wsd_decay_fraction=0.2) == pytest.approx(0.5)
    cfg = load_config(RunConfig, None, ["--train.steps", "1000", "--train.budget_flops", "5e9"])
    assert total_steps(cfg.train, 100, 1e9) == 5  # the FLOP budget binds first
    cfg = load_config(RunConfig, None, ["--train.steps", "3", "--train.budget_tokens", "1000"])
    assert total_steps(cfg.train, 100, 1e9) == 3


def test_more_streams_than_samples_is_a_clear_error(corpus):
    loader = TrainLoader(make_cfg(corpus, "--data.streams", "512"), 0, 1)
    with pytest.raises(FormatError, match=r"stream 511 of 512 got no sample.*lower data.streams"):
        Stream(loader.specs[-1]).next_micro_batch()
