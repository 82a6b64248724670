"""10,000 tiny shards (one document each) from four tasks: an interrupted prep resumed, the manifest,
and the training loader reading and resuming over all of them. Correctness and counts only; the time
these take at 1,000 vs 10,000 shards is benchmarks/bench_data_prep.py's business."""
from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pytest

from data_prep.__main__ import main as prep_main
from data_prep.format import check_shard_sizes, read_manifest, shard_paths
from data_prep.tasks import pending_tasks, plan_tasks, run_task
from data_prep.tokenizer import load_tokenizer
from pretrain.data import Stream, StreamSpec

FILES, DOCS_PER_FILE, VAL_FRACTION, N_CTX = 4, 2_560, 0.02, 16


@pytest.fixture(scope="module")
def gpt2(shared_data):
    return load_tokenizer(shared_data / "tokenizers" / "r50k_base.tiktoken")


def write_inputs(folder, shared_data) -> list[list[str]]:
    """FILES jsonl files of short real sentences (TinyStories), numbered so that no two are equal."""
    lines = (shared_data / "tinystories/train-head.jsonl").read_text().splitlines()
    sentences = [s.strip() + "." for line in lines for s in json.loads(line)["text"].split(".") if s.strip()]
    texts = [[f"{f}-{i}: {sentences[(f * DOCS_PER_FILE + i) % len(sentences)]}" for i in range(DOCS_PER_FILE)]
             for f in range(FILES)]
    for f, docs in enumerate(texts):
        (folder / f"part-{f}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in docs))
    return texts


def is_val(text: str) -> bool:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little") < VAL_FRACTION * 2**64


@pytest.fixture(scope="module")
def many_shards(tmp_path_factory, shared_data, gpt2):
    folder = tmp_path_factory.mktemp("many")
    texts = write_inputs(folder, shared_data)
    out = folder / "prep"
    options = ["--tokenizer", "gpt2", "--out", str(out), "--val-fraction", str(VAL_FRACTION), "--sample-tokens",
               "1", "--shard-tokens", "1", "--workers", "1", "--progress", "false"]
    real_fsync = os.fsync
    os.fsync = lambda fd: None  # 10,000 fsyncs would only measure this disk; durability is tested elsewhere
    try:
        plan_tasks([str(folder / f"part-{f}.jsonl") for f in range(FILES)], out, tokenizer="gpt2",
                   val_fraction=VAL_FRACTION, sample_tokens=1, shard_tokens=1)
        run_task(out, 0)
        run_task(out, 2)  # then "killed": tasks 1 and 3 unfinished, task 1 with a stray partial shard
        (out / "train-00001-00007.tar").write_bytes(b"partial")
        (out / ".val-00001-abcdefgh.tmp").write_bytes(b"partial")
        assert pending_tasks(out) == [1, 3]
        assert prep_main(["tokenize", "--input", *(str(folder / f"part-{f}.jsonl") for f in range(FILES)),
                          *options, "--resume"]) == 0
    finally:
        os.fsync = real_fsync
    eos = gpt2.eot_token
    expected = {}  # shard name -> its one document's tokens, from the rule (task = file, seq = order)
    for task, docs in enumerate(texts):
        for split in ("train", "val"):
            mine = [t for t in docs if is_val(t) == (split == "val")]
            expected.update({f"{split}-{task:05d}-{seq:05d}.tar": gpt2.encode_ordinary(t) + [eos]
                             for seq, t in enumerate(mine)})
    return out, expected


def test_manifest_lists_every_shard_once(many_shards):
    out, expected = many_shards
    manifest = read_manifest(out)
    names = [s["name"] for s in manifest["shards"]]
    assert len(names) == FILES * DOCS_PER_FILE >= 10_000
    assert sorted(names) == sorted(expected) and len(set(names)) == len(names)
    assert all(s["documents"] == 1 and s["tokens"] == len(expected[s["name"]]) for s in manifest["shards"])
    assert manifest["totals"]["documents"] == FILES * DOCS_PER_FILE
    assert not (out / ".val-00001-abcdefgh.tmp").exists()
    assert (out / "train-00001-00007.tar").read_bytes() != b"partial"  # redone, not the stray
    check_shard_sizes(out, manifest)
    on_disk = sorted(p.name for p in out.glob("*.tar"))
    assert on_disk == sorted(names)


def stream_spec(out, manifest, stream: int, n_streams: int) -> StreamSpec:
    records = [s for s in manifest["shards"] if s["split"] == "train"]
    return StreamSpec(tuple(str(p) for p in shard_paths(out, manifest, "train")), stream, n_streams, seed=3,
                      n_ctx=N_CTX, mode="packed", pad_side="right", eos=int(manifest["eos_id"]),
                      dtype=manifest["dtype"], shuffle_buffer=1, micro_batch=4,
                      shard_bytes=tuple(r["bytes"] for r in records), shard_tasks=tuple(r["task"] for r in records))


def test_loader_reads_and_resumes_over_all_shards(many_shards):
    out, expected = many_shards
    manifest = read_manifest(out)
    spec = stream_spec(out, manifest, stream=1, n_streams=2)
    order = np.random.default_rng([spec.seed, 0]).permutation(len(spec.shards))
    # stream 1 of 2 reads every other shard of the epoch's seeded order, documents back to back
    mine = [expected[os.path.basename(spec.shards[i])] for i in order[1::2]]
    tokens = np.concatenate(mine)
    per_batch = spec.micro_batch * N_CTX
    batches = (len(tokens) - 1) // per_batch  # all of epoch 0 (packed windows tile the token stream)
    stream = Stream(spec)
    resumed, state_at = None, batches // 3
    seen = []
    for b in range(batches):
        if b == state_at:
            resumed = Stream(spec, stream.state())
        seen.append(stream.next_micro_batch())
    inputs = np.concatenate([batch[:, 0].reshape(-1) for batch in seen])
    assert len(mine) > 4_900 and np.array_equal(inputs, tokens[:batches * per_batch])
    for b in range(state_at, batches):  # the resumed stream continues exactly
        assert np.array_equal(resumed.next_micro_batch(), seen[b])
