"""Data prep round trips on the shared real corpora: every reader, webdataset read-back, verify/stats,
tokenizers (offline GPT-2 ranks, trained BPE), config errors."""
from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import webdataset as wds
import zstandard

from data_prep.__main__ import main as prep_main
from data_prep.format import decode_sample, read_manifest, shard_paths, split_documents
from data_prep.tokenizer import TokenizerError, load_tokenizer

VAL_FRACTION = 0.1


@pytest.fixture(scope="module")
def gpt2(shared_data):
    return load_tokenizer(shared_data / "tokenizers" / "r50k_base.tiktoken")


def expected_split(text: str) -> str:
    """The documented split rule, restated independently: blake2b-64 of the UTF-8 text vs the fraction."""
    h = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
    return "val" if h < VAL_FRACTION * 2**64 else "train"


def source_texts(path: Path) -> list[str]:
    name = path.name
    if name.endswith(".parquet"):
        return pq.read_table(path, columns=["text"]).column("text").to_pylist()
    if name.endswith(".zst"):
        raw = zstandard.ZstdDecompressor().stream_reader(path.open("rb")).read().decode()
        return [json.loads(line)["text"] for line in raw.splitlines() if line.strip()]
    if name.endswith(".jsonl"):
        return [json.loads(line)["text"] for line in path.read_text().splitlines() if line.strip()]
    parts = re.split(r"\n\s*\n", path.read_text(encoding="utf-8"))  # blank-line runs separate documents
    return [p.strip() for p in parts if p.strip()]


def webdataset_documents(prep: Path, split: str) -> list[list[int]]:
    manifest = read_manifest(prep)
    urls = [str(p) for p in shard_paths(prep, manifest, split)]
    docs = []
    for sample in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
        tokens, lengths = decode_sample(sample, manifest["dtype"])
        docs += [d.tolist() for d in split_documents(tokens, lengths)]
    return docs


def tokenize(inputs: list[Path | str], out: Path, *extra: str, tokenizer: str | Path) -> dict:
    argv = ["tokenize", "--input", *map(str, inputs), "--tokenizer", str(tokenizer), "--out", str(out),
            "--val-fraction", str(VAL_FRACTION), "--progress", "false", *extra]
    assert prep_main(argv) == 0
    return read_manifest(out)


@pytest.mark.parametrize("relpath", ["tinystories/train-head.jsonl", "tinystories/train-lower.jsonl.zst",
                                     "tinystories/valid-head.txt", "enwiki/enwiki-sample.parquet"])
def test_round_trip_through_webdataset(relpath, shared_data, gpt2, tmp_path):
    source = shared_data / relpath
    ranks = shared_data / "tokenizers" / "r50k_base.tiktoken"
    # small samples/shards so that documents cross sample and shard boundaries
    manifest = tokenize([source], tmp_path / "prep", "--sample-tokens", "5000", "--shard-tokens", "60000",
                        "--workers", "1", tokenizer=ranks)
    texts = [t for t in source_texts(source) if t.strip()]
    eos = gpt2.eot_token
    for split in ("train", "val"):
        expected = [gpt2.encode_ordinary(t) + [eos] for t in texts if expected_split(t) == split]
        assert webdataset_documents(tmp_path / "prep", split) == expected, split
    entry, = manifest["inputs"]
    assert entry["read"] == len(texts) == entry["written"] and entry["skipped"] == {}
    assert manifest["eos_id"] == 50256 and manifest["vocab_size"] == 50257 and manifest["dtype"] == "uint16"
    assert manifest["ranks_sha256"] == "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
    totals = manifest["totals"]
    assert totals["documents"] == len(texts)
    assert totals["utf8_bytes"] == sum(len(t.encode()) for t in texts)
    assert totals["tokens"] == sum(s["tokens"] for s in manifest["shards"])
    assert len(manifest["shards"]) >= 2 and totals["splits"]["val"]["documents"] > 0
    if relpath.endswith(".txt"):
        assert entry["txt_rule"] == "blank-lines"
    # plain tar, readable by tar(1); names say split, task and sequence
    for shard in manifest["shards"]:
        assert re.fullmatch(r"(train|val)-\d{5}-\d{5}\.tar", shard["name"])
        listing = subprocess.run(["tar", "tf", str(tmp_path / "prep" / shard["name"])], capture_output=True,
                                 text=True, check=True).stdout.split()
        assert listing and all(n.endswith((".tokens.zst", ".lengths.zst")) for n in listing)


def test_txt_with_endoftext_lines_and_specials_in_text(tmp_path, shared_data, gpt2):
    """`<|endoftext|>` lines separate documents; the special string inside a line is ordinary text."""
    path = tmp_path / "stories.txt"
    docs = ["First story.\n\nStill the first, with <|endoftext|> inside a line.", "Second story.", "Third."]
    path.write_text("\n<|endoftext|>\n".join(docs) + "\n<|endoftext|>\n")
    prep = tmp_path / "prep"
    manifest = tokenize([path], prep, "--val-fraction", "0", tokenizer="gpt2")
    assert manifest["inputs"][0]["txt_rule"] == "endoftext-lines"
    assert webdataset_documents(prep, "train") == [gpt2.encode_ordinary(d) + [gpt2.eot_token] for d in docs]


def test_verify_and_stats(tmp_path, shared_data, capsys):
    prep = tmp_path / "prep"
    tokenize([shared_data / "tinystories/train-head.jsonl"], prep, "--sample-tokens", "4000",
             "--shard-tokens", "50000", tokenizer="gpt2")
    assert prep_main(["verify", str(prep)]) == 0
    capsys.readouterr()
    assert prep_main(["stats", str(prep)]) == 0
    table = capsys.readouterr().out
    assert "p50" in table and "train" in table and "val" in table
    assert prep_main(["stats", str(prep), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    train = stats["splits"]["train"]
    assert train["p1"] <= train["p50"] <= train["p99"] <= train["max_length"]
    assert 3.5 < stats["utf8_bytes_per_token"] < 4.5  # English prose with GPT-2 BPE
    # damage one byte of one shard: verify names it and fails
    victim = sorted(prep.glob("train-*.tar"))[1]
    data = bytearray(victim.read_bytes())
    data[700] ^= 0xFF
    victim.write_bytes(bytes(data))
    assert prep_main(["verify", str(prep), "--workers", "2"]) == 1
    err = capsys.readouterr().err
    assert f"BAD {victim.name}: sha256 differs" in err
    assert sum(line.startswith("BAD") for line in err.splitlines()) == 2  # hash + unreadable sample


def test_builtin_corpus(tmp_path, capsys):
    prep = tmp_path / "prep"
    assert prep_main(["tokenize", "--input", "builtin:python-docs", "--tokenizer", "gpt2", "--out", str(prep),
                      "--workers", "2", "--progress", "false"]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "bytes/token" in out
    manifest = read_manifest(prep)
    assert manifest["totals"]["documents"] > 500 and manifest["totals"]["tokens"] > 300_000
    assert manifest["tasks"] == 5
    topics = next(i for i in manifest["inputs"] if i["path"] == "builtin:python-docs")
    assert topics["read"] == topics["written"] + sum(topics["skipped"].values())


def test_gpt2_by_name_offline_equals_file(shared_data):
    by_name = load_tokenizer("gpt2")
    by_file = load_tokenizer(shared_data / "tokenizers" / "r50k_base.tiktoken")
    assert by_name.encode_ordinary("Hello world") == [15496, 995]  # the well-known GPT-2 ids
    text = "hello <|endoftext|> world"  # the special string is ordinary text to encode_ordinary
    assert by_name.encode_ordinary(text) == by_file.encode_ordinary(text) == \
        [31373, 1279, 91, 437, 1659, 5239, 91, 29, 995]
    assert by_name.eot_token == 50256 and by_name.n_vocab == 50257


def test_unknown_ranks_without_metadata_is_a_clear_error(tmp_path, shared_data):
    lines = (shared_data / "tokenizers" / "r50k_base.tiktoken").read_text().splitlines()[:300]
    path = tmp_path / "cut.tiktoken"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(TokenizerError, match=r"cut\.tiktoken: unknown ranks .*cut\.tiktoken\.json"):
        load_tokenizer(path)
    (tmp_path / "bad.tiktoken").write_text("not base64 at all\n")
    with pytest.raises(TokenizerError, match=r"bad\.tiktoken:1"):
        load_tokenizer(tmp_path / "bad.tiktoken")


def test_train_tokenizer_matches_trainer_on_held_out_text(tmp_path, shared_data):
    from data_prep.train_tokenizer import TrainTokenizerConfig, train

    out = tmp_path / "ts1k.tiktoken"
    trainer, enc = train(TrainTokenizerConfig(input=[str(shared_data / "tinystories/train-head.jsonl")],
                                              vocab_size=1024, out=str(out), progress=False))
    assert enc.n_vocab == 1024 and enc.eot_token == 1023
    held_out = (shared_data / "tinystories/valid-head.txt").read_text()[:200_000]
    for chunk in [held_out[i:i + 5000] for i in range(0, len(held_out), 5000)]:
        assert enc.encode_ordinary(chunk) == trainer.encode(chunk)
    reloaded = load_tokenizer(out)  # offline, from the file + its metadata
    assert reloaded.encode_ordinary(held_out[:3000]) == enc.encode_ordinary(held_out[:3000])
    # the command line writes the same files
    cli_out = tmp_path / "cli" / "ts1k.tiktoken"
    assert prep_main(["train-tokenizer", "--input", str(shared_data / "tinystories/train-head.jsonl"),
                      "--vocab-size", "1024", "--out", str(cli_out), "--progress", "false"]) == 0
    assert cli_out.read_bytes() == out.read_bytes()
    # ... and it drives a prep with uint16 shards
    prep = tmp_path / "prep"
    manifest = tokenize([shared_data / "tinystories/train-head.jsonl"], prep, tokenizer=out)
    assert manifest["vocab_size"] == 1024 and manifest["eos_id"] == 1023
    docs = webdataset_documents(prep, "train")
    assert max(max(d) for d in docs) == 1023 and all(d[-1] == 1023 for d in docs)


def test_config_errors_name_the_closest_key(tmp_path, capsys):
    assert prep_main(["tokenize", "--input", "builtin:python-docs", "--out", str(tmp_path), "--workrs", "2"]) == 2
    assert "unknown key 'workrs': did you mean 'workers'?" in capsys.readouterr().err
    assert prep_main(["tokenize", "--input", "builtin:python-docs", "--out", str(tmp_path),
                      "--val-fraction", "abc"]) == 2
    assert "val_fraction: expected a number" in capsys.readouterr().err
    from data_prep.config import PrepConfig
    from stackcore.config import load_config

    for path in sorted((Path(__file__).resolve().parents[1] / "configs" / "prep").glob("*.toml")):
        assert load_config(PrepConfig, path).input, path  # every shipped config is valid
    config = Path(__file__).resolve().parents[1] / "configs" / "prep" / "python-docs.toml"
    proc = subprocess.run([sys.executable, "-m", "data_prep", "plan", "--config", str(config), "--out",
                           str(tmp_path / "p")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "5 tasks planned" in proc.stdout
    assert json.loads((tmp_path / "p" / "plan.json").read_text())["tasks"][0]["part"] == 0
