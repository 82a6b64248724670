"""The block path (many documents per reader step, per tiktoken call, per sample write) against the plain
per-document rules: frozen shard hashes from the per-document implementation, an independent per-line
reference for the readers on awkward inputs, and add_block against add."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import tiktoken
import webdataset as wds

from data_prep import readers
from data_prep.__main__ import main as prep_main
from data_prep.block_encode import LONG_DOCUMENT_CHARS, BlockEncoder, joinable
from data_prep.format import decode_sample, read_manifest, shard_paths, split_documents
from data_prep.pool import run_tasks
from data_prep.shards import SplitWriter
from data_prep.tasks import finalize, plan_tasks
from data_prep.tokenizer import load_tokenizer

# The shard fingerprint (sha256 over shard names and sha256s) of the four shared corpora prepped by the
# per-document implementation (commit 74ffe04: one encode_ordinary call, one json.loads and one list per
# document), recorded before the block path replaced it; tiktoken and zstandard are pinned.
PER_DOCUMENT_FINGERPRINT = "2e18ab86c72a1cfaeda429371cd3ad6ecb9ab50b9ae3d7326c99513532725aeb"
VAL_FRACTION = 0.3


@pytest.fixture(scope="module")
def gpt2(shared_data):
    return load_tokenizer(shared_data / "tokenizers" / "r50k_base.tiktoken")


def test_shards_equal_the_per_document_implementation(shared_data, tmp_path):
    files = ["tinystories/train-head.jsonl", "tinystories/train-lower.jsonl.zst", "tinystories/valid-head.txt",
             "enwiki/enwiki-sample.parquet"]
    plan = plan_tasks([str(shared_data / f) for f in files], tmp_path / "prep", val_fraction=0.1,
                      tokenizer=str(shared_data / "tokenizers" / "r50k_base.tiktoken"),
                      sample_tokens=5000, shard_tokens=60000, task_mb=0.5)
    run_tasks(tmp_path / "prep", [t["index"] for t in plan["tasks"]], workers=1, show_progress=False)
    manifest = finalize(tmp_path / "prep")
    assert len(manifest["shards"]) == 37 and manifest["totals"]["documents"] == 11016
    assert manifest["fingerprint"] == PER_DOCUMENT_FINGERPRINT


def test_block_encoder_equals_encode_ordinary(gpt2):
    eos = gpt2.eot_token
    texts = ["plain", " leading space", "trailing spaces   ", "ends with <|endoftext", "|>starts oddly",
             "a <|fim_prefix|> lookalike", "\n\n", "naïve café 😀", "x" * 5000]
    encode = BlockEncoder(gpt2)
    assert joinable(gpt2)
    tokens, lengths = encode(texts)
    assert tokens.dtype == np.uint32 and lengths.tolist() == [len(gpt2.encode_ordinary(t)) + 1 for t in texts]
    assert tokens.tolist() == [i for t in texts for i in gpt2.encode_ordinary(t) + [eos]]
    # a document holding the EOS text itself: encoded as ordinary text, like encode_ordinary does
    with_eos = texts[:3] + ["story one<|endoftext|>story two"] + texts[3:]
    tokens, lengths = encode(with_eos)
    assert tokens.tolist() == [i for t in with_eos for i in gpt2.encode_ordinary(t) + [eos]]
    assert len(lengths) == len(with_eos)
    # long documents (one call each, nothing special allowed), the EOS text inside one of them
    long = ["A long one <|endoftext|> with the EOS text. " * 60, "naïve café 😀 " * 300, "<|fim_prefix|>" * 200]
    assert sum(map(len, long)) >= LONG_DOCUMENT_CHARS * len(long)
    tokens, lengths = encode(long)
    assert tokens.tolist() == [i for t in long for i in gpt2.encode_ordinary(t) + [eos]]
    assert lengths.tolist() == [len(gpt2.encode_ordinary(t)) + 1 for t in long]


def test_tokenizer_with_odd_special_tokens_is_encoded_per_document(gpt2):
    odd = tiktoken.Encoding(name="odd", pat_str=gpt2._pat_str, mergeable_ranks=gpt2._mergeable_ranks,
                            special_tokens={"<|endoftext|>": 50256, "<|end": 50257})
    assert not joinable(odd)  # "<|end" could match across a joint and hide a separator
    texts = ["a <|end b", "c"]
    tokens, lengths = BlockEncoder(odd)(texts)
    assert tokens.tolist() == [i for t in texts for i in odd.encode_ordinary(t) + [50256]]


@pytest.mark.parametrize("sample_tokens,shard_tokens", [(1, 1), (7, 40), (50, 10_000), (10_000, 10_000)])
def test_add_block_cuts_like_add(tmp_path, sample_tokens, shard_tokens):
    rng = np.random.default_rng(sample_tokens)
    docs = [list(rng.integers(0, 50_000, size=int(n))) + [50256] for n in rng.integers(0, 30, size=400)]
    per_doc, block = tmp_path / "per-doc", tmp_path / "block"
    per_doc.mkdir(), block.mkdir()
    one = SplitWriter(per_doc, "train", 3, np.dtype("<u2"), sample_tokens, shard_tokens)
    for ids in docs:
        one.add(ids, 2 * len(ids))
    many = SplitWriter(block, "train", 3, np.dtype("<u2"), sample_tokens, shard_tokens)
    for start in range(0, len(docs), 37):  # blocks of 37 documents, cuts fall inside and between them
        part = docs[start:start + 37]
        lengths = np.array([len(d) for d in part], dtype=np.uint32)
        many.add_block(np.array([t for d in part for t in d], dtype=np.uint32), lengths, int(2 * lengths.sum()))
    assert one.close() == many.close()
    assert one.utf8_bytes == many.utf8_bytes and one.tokens == many.tokens
    names = sorted(p.name for p in per_doc.iterdir())
    assert names == sorted(p.name for p in block.iterdir()) and len(names) > 0
    assert all((per_doc / n).read_bytes() == (block / n).read_bytes() for n in names)


def reference_txt_documents(data: bytes) -> list[str]:
    """The plain-text rule, restated line by line: `<|endoftext|>` lines separate documents if the file has
    any, else blank lines; a document is its lines decoded and stripped; empty documents are skipped."""
    lines = data.split(b"\n")
    lines = [line + b"\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])
    eot = any(line.strip() == b"<|endoftext|>" for line in lines)
    docs, parts = [], []
    for line in lines + [b"<|endoftext|>" if eot else b""]:  # a separator closes the last document
        if (line.strip() == b"<|endoftext|>") if eot else not line.strip():
            docs.append(b"".join(parts).decode().strip())
            parts = []
        else:
            parts.append(line)
    return [d for d in docs if d]


def reference_jsonl_documents(data: bytes) -> list[str]:
    texts = [json.loads(line)["text"] for line in data.split(b"\n") if line.strip()]
    return [t for t in texts if t.strip()]


AWKWARD_TEXTS = ["One <|endoftext|> inside.", "  padded  ", "tab\tand\x0cform feed", "naïve café 😀 ",
                 "\u00a0no-break spaces at the edges\u00a0", "ends <|endoftext", "<|fim_prefix|> lookalike",
                 "long " * 300, "short"]


def awkward_inputs(tmp_path) -> dict[str, bytes]:
    """Files whose documents cross the (shrunk) block size, with blank and whitespace-only lines, CRLF,
    a last line without newline, and the EOS text inside documents."""
    jsonl = b"".join(json.dumps({"id": i, "text": t}, ensure_ascii=i % 2 == 0).encode() + (b"\r\n" if i % 3 else b"\n")
                     for i, t in enumerate(AWKWARD_TEXTS * 3))
    jsonl = jsonl.replace(b"\n", b"\n\n \n", 1) + json.dumps({"text": "no newline at the end"}).encode()
    blank = "\n\n".join(AWKWARD_TEXTS).replace("tab", "\n \t \r\n\x0b\ntab") + "\n \n\n  \t\nlast line, no newline"
    eot = "\n<|endoftext|>\n".join(t + "\n\n  blank lines inside\n" for t in AWKWARD_TEXTS)
    eot = eot.replace("\n<|endoftext|>\n", "\n  <|endoftext|> \t\r\n", 2) + "\n<|endoftext|>\n\n"
    return {"awkward.jsonl": jsonl, "blank.txt": blank.encode(), "eot.txt": eot.encode()}


@pytest.mark.parametrize("block_bytes", [64, 1000, 1 << 20])
def test_readers_match_the_per_line_rules(tmp_path, monkeypatch, gpt2, block_bytes):
    monkeypatch.setattr(readers, "BLOCK_BYTES", block_bytes)
    eos = gpt2.eot_token
    for name, data in awkward_inputs(tmp_path).items():
        path = tmp_path / name
        path.write_bytes(data)
        texts = reference_jsonl_documents(data) if name.endswith(".jsonl") else reference_txt_documents(data)
        out = tmp_path / f"prep-{name}"
        assert prep_main(["tokenize", "--input", str(path), "--tokenizer", "gpt2", "--out", str(out), "--workers",
                          "1", "--progress", "false", "--val-fraction", str(VAL_FRACTION), "--sample-tokens",
                          "300", "--shard-tokens", "900"]) == 0
        manifest = read_manifest(out)
        for split in ("train", "val"):
            expected = [gpt2.encode_ordinary(t) + [eos] for t in texts if split_of(t) == split]
            assert documents(out, manifest, split) == expected, (name, split)
        entry, = manifest["inputs"]
        assert entry["written"] == len(texts) and entry["read"] == entry["written"] + sum(entry["skipped"].values())


def split_of(text: str) -> str:
    h = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
    return "val" if h < VAL_FRACTION * 2**64 else "train"


def documents(prep, manifest: dict, split: str) -> list[list[int]]:
    docs = []
    urls = [str(p) for p in shard_paths(prep, manifest, split)]
    for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
        tokens, lengths = decode_sample(sample, manifest["dtype"])
        docs += [d.tolist() for d in split_documents(tokens, lengths)]
    return docs


def random_jsonl(rnd) -> bytes:
    good = ["hi", " there ", "café", "a<|endoftext|>b", "x" * 90]
    bad = [b"", b"  ", b"\r", b"\x0c", b'{"text": "a\\ud800"}', b'{"text": ""}', b'{"text": "  "}', b'{"text": 5}',
           b'{"id": 1}', b"[1, 2]", b'{"text": "a"', b'{"text": "a", "id": "\xff"}', b'{"text": "a\xe2\x80"}',
           b'{"text": "ok"} {"text": "x"}', b'{"text": "a", "x": NaN}', b'{"text": "dup", "text": "dup2"}']
    lines = [json.dumps({"id": 1, "text": rnd.choice(good)}, ensure_ascii=rnd.random() < 0.5).encode()
             if rnd.random() < 0.6 else rnd.choice(bad) for _ in range(rnd.randint(1, 40))]
    return b"\n".join(lines) + (b"\n" if rnd.random() < 0.7 else b"")


def outcome(reader_cls, path, mode: str, docs_of) -> list:
    stats = readers.InputStats()
    try:
        return [docs_of(reader_cls(str(path), stats, mode, 100, "text")), stats.to_dict()]
    except readers.InputError as exc:
        return ["error", str(exc)]


def test_jsonl_fast_path_equals_the_per_line_path(tmp_path, monkeypatch):
    """Random lines, good and bad (blank, malformed, invalid UTF-8 in any field, lone surrogates, missing or
    non-string text, two objects on a line, too long...): the block path gives the documents, counts and
    error messages of the per-line path it falls back to."""
    import random

    path = tmp_path / "fuzz.jsonl"
    for seed in range(150):
        rnd = random.Random(seed)
        data = random_jsonl(rnd)
        path.write_bytes(data)
        monkeypatch.setattr(readers, "BLOCK_BYTES", rnd.choice([16, 64, 1 << 20]))
        lines = [line + b"\n" for line in data.split(b"\n")]
        lines[-1] = lines[-1][:-1]
        for mode in ("skip", "raise"):
            fast = outcome(readers.JsonlReader, path, mode, lambda r: [t for t, _ in r])
            slow = outcome(readers.JsonlReader, path, mode, lambda r: r.line_by_line(lines, 1)[0])
            assert fast == slow, (seed, mode, data)


def reference_txt_outcome(data: bytes, max_bytes: int) -> list:
    """Documents and skip counts of the plain-text rule, line by line (the per-line reader this replaced)."""
    lines = [line + b"\n" for line in data.split(b"\n")]
    lines[-1] = lines[-1][:-1]
    eot = any(line.strip() == b"<|endoftext|>" for line in lines)
    docs, skipped, parts, read = [], {}, [], 0
    for line in lines + [b"<|endoftext|>" if eot else b""]:
        if (line.strip() == b"<|endoftext|>") if eot else not line.strip():
            if parts:
                read += 1
                raw = b"".join(parts)
                reason = "too_long" if len(raw) > max_bytes else None
                try:
                    text = raw.decode().strip()
                except UnicodeDecodeError:
                    reason = reason or "invalid_utf8"
                reason = reason or ("empty" if not text else None)
                if reason:
                    skipped[reason] = skipped.get(reason, 0) + 1
                else:
                    docs.append(text)
            parts = []
        elif line:
            parts.append(line)
    return [docs, {"read": read, "written": 0, "skipped": dict(sorted(skipped.items())),
                   "txt_rule": "endoftext-lines" if eot else "blank-lines"}]


def test_txt_blocks_equal_the_per_line_rule(tmp_path, monkeypatch):
    """Random plain text with blank, whitespace-only and `<|endoftext|>` lines, invalid UTF-8 and over-long
    documents, at block sizes that cut documents anywhere: documents and skip counts per the line rule."""
    import random

    path = tmp_path / "fuzz.txt"
    choices = [b"", b"  ", b"\t\r", b"\x0c", b" <|endoftext|> ", b"<|endoftext|>", b"bad \xe2\x80 utf8", b"x" * 120,
               b"hello", b"  world ", "café \u00a0".encode(), b"a <|endoftext|> b"]
    for seed in range(200):
        rnd = random.Random(seed)
        data = b"\n".join(rnd.choice(choices) * rnd.randint(1, 2) for _ in range(rnd.randint(1, 50)))
        data += b"\n" if rnd.random() < 0.7 else b""
        path.write_bytes(data)
        monkeypatch.setattr(readers, "BLOCK_BYTES", rnd.choice([16, 64, 1 << 20]))
        assert outcome(readers.TxtReader, path, "skip", lambda r: [t for t, _ in r]) == \
            reference_txt_outcome(data, 100), (seed, data)


def test_open_samples_hold_copies_not_views_of_blocks(tmp_path):
    """A rare split's writer keeps a sample open across many blocks: views would pin every block it saw
    (peak memory growing with the corpus, measured in bench_data_prep.py); it must hold copies."""
    writer = SplitWriter(tmp_path, "val", 0, np.dtype("<u2"), 10_000, 100_000)
    block = np.arange(1_000, dtype=np.uint32)
    writer.add_block(block[10:20], np.array([4, 6], dtype=np.uint32), 40)
    assert writer._docs and all(piece.base is None for piece in writer._docs + writer._lengths)
    assert writer.close()[0]["tokens"] == 10
