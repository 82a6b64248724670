"""`python -m data_prep pairs`: round trip against direct tokenization, a split with no shared passage,
the task/resume/verify discipline of `tokenize`, and bad input named or counted."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import REPO_ROOT
from data_prep.format import FormatError, read_manifest
from data_prep.pair_format import read_pairs
from data_prep.pairs import derive_pair, main as pairs_main
from data_prep.tasks import PrepError
from data_prep.tokenizer import load_tokenizer
from stackcore.config import ConfigError


def _prep(out: Path, inputs: list, *extra: str) -> dict:
    args = ["--input", *map(str, inputs), "--tokenizer", "gpt2", "--out", str(out), "--progress", "false",
            "--workers", "1", *extra]
    assert pairs_main(args) == 0
    return read_manifest(out)


def _all_pairs(out: Path) -> list[tuple[tuple, tuple, str]]:
    rows = []
    for split in ("train", "val"):
        pairs = read_pairs(out, split)
        rows += [(tuple(q.tolist()), tuple(p.tolist()), split) for q, p in zip(pairs.queries, pairs.passages)]
    return rows


@pytest.fixture(scope="module")
def stories(shared_data, tmp_path_factory) -> Path:
    """The first 120 TinyStories stories, plus one story with no sentence end (a counted `no_pair`)."""
    path = tmp_path_factory.mktemp("stories") / "stories.jsonl"
    lines = (shared_data / "tinystories/train-head.jsonl").read_text().splitlines()[:120]
    path.write_text("\n".join(lines + [json.dumps({"text": "no sentence end here"})]) + "\n")
    return path


def test_rule_pairs_round_trip_and_counts(stories, tmp_path):
    manifest = _prep(tmp_path / "p", [stories], "--val-fraction", "0.3")
    enc = load_tokenizer("gpt2")
    expected = []
    for line in stories.read_text().splitlines():
        pair = derive_pair(json.loads(line)["text"], "first-sentence")
        if pair is not None:
            expected.append((tuple(enc.encode_ordinary(pair[0])), tuple(enc.encode_ordinary(pair[1]))))
    got = _all_pairs(tmp_path / "p")
    assert sorted((q, p) for q, p, _ in got) == sorted(expected)
    assert manifest["inputs"][0]["read"] == 121 and manifest["inputs"][0]["skipped"] == {"no_pair": 121 - len(expected)}
    assert len(expected) < 121  # the appended story with no sentence end at least
    assert manifest["pairs"]["query"] == "first-sentence" and {s for *_, s in got} == {"train", "val"}


def test_field_pairs_parquet_round_trip_and_split(shared_data, tmp_path):
    source = shared_data / "enwiki/enwiki-sample.parquet"
    _prep(tmp_path / "w", [source], "--query", "field:title", "--passage", "field:text", "--val-fraction", "0.3")
    enc, table = load_tokenizer("gpt2"), pq.read_table(source, columns=["title", "text"]).to_pylist()
    expected = sorted((tuple(enc.encode_ordinary(r["title"].strip())), tuple(enc.encode_ordinary(r["text"].strip())))
                      for r in table)
    got = _all_pairs(tmp_path / "w")
    assert sorted((q, p) for q, p, _ in got) == expected
    train = {p for _, p, s in got if s == "train"}
    val = {p for _, p, s in got if s == "val"}
    assert train and val and not train & val


def test_repeated_passage_never_in_both_splits(tmp_path):
    # the same passage under 40 different queries: a split by row would scatter it, a split by passage not
    rows = [{"q": f"question {i}", "p": "The one shared answer."} for i in range(40)]
    rows += [{"q": f"q{i}", "p": f"Passage number {i} is unique."} for i in range(40)]
    src = tmp_path / "dup.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    _prep(tmp_path / "d", [src], "--query", "field:q", "--passage", "field:p", "--val-fraction", "0.5")
    got = _all_pairs(tmp_path / "d")
    train = {p for _, p, s in got if s == "train"}
    val = {p for _, p, s in got if s == "val"}
    assert len(got) == 80 and train and val and not train & val


def test_workers_and_resume_give_the_same_shards(stories, shared_data, tmp_path):
    inputs = [stories, shared_data / "tinystories/valid-head.txt"]  # two tasks, two readers
    one = _prep(tmp_path / "one", inputs)
    cmd = [sys.executable, "-m", "data_prep", "pairs", "--input", *map(str, inputs), "--tokenizer", "gpt2",
           "--out", str(tmp_path / "two"), "--workers", "2", "--progress", "false"]
    subprocess.run(cmd, check=True, cwd=REPO_ROOT, capture_output=True)
    assert read_manifest(tmp_path / "two")["fingerprint"] == one["fingerprint"]
    # a lost task (its shards and marker gone) is redone by --resume, byte-identical
    shutil.copytree(tmp_path / "one", tmp_path / "resumed")
    for path in (tmp_path / "resumed").glob("*-00001-*.tar"):
        path.unlink()
    (tmp_path / "resumed/tasks/00001.json").unlink()
    assert _prep(tmp_path / "resumed", inputs, "--resume")["fingerprint"] == one["fingerprint"]
    verify = subprocess.run([sys.executable, "-m", "data_prep", "verify", str(tmp_path / "resumed")],
                            cwd=REPO_ROOT, capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr
    with pytest.raises(PrepError, match="lead"):
        _prep(tmp_path / "resumed", inputs, "--resume", "--query", "lead")


def test_bad_input_named_or_counted(tmp_path):
    src = tmp_path / "bad.jsonl"
    src.write_text('{"q": "a title", "p": "a passage."}\n{"q": "broken\n{"q": "x"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: malformed JSON"):
        _prep(tmp_path / "r", [src], "--query", "field:q", "--passage", "field:p")
    manifest = _prep(tmp_path / "s", [src], "--query", "field:q", "--passage", "field:p", "--on-error", "skip")
    assert manifest["inputs"][0]["skipped"] == {"malformed_json": 1, "missing_text": 1}
    with pytest.raises(ConfigError, match="two fields"):
        _prep(tmp_path / "c", [src], "--query", "field:q", "--passage", "rest")
    (tmp_path / "plain.txt").write_text("One sentence. Another one.\n")
    with pytest.raises(ValueError, match="no fields"):
        _prep(tmp_path / "t", [tmp_path / "plain.txt"], "--query", "field:q", "--passage", "field:p")


def test_read_pairs_refuses_a_text_prep(tmp_path, shared_data):
    out = tmp_path / "text"
    subprocess.run([sys.executable, "-m", "data_prep", "tokenize", "--input",
                    str(shared_data / "enwiki/enwiki-sample.parquet"), "--tokenizer", "gpt2", "--out", str(out),
                    "--workers", "1", "--progress", "false"], check=True, cwd=REPO_ROOT, capture_output=True)
    with pytest.raises(FormatError, match="not a pairs directory"):
        read_pairs(out)
