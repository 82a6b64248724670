"""Bad input: each case fails with an error naming the file (and line / row group), or with
`--on-error skip` becomes a counted skip; documents read = written + skipped for every input file."""
from __future__ import annotations

import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_prep.__main__ import main as prep_main
from data_prep.format import read_manifest


def run(tmp_path, inputs, *extra, out="prep"):
    argv = ["tokenize", "--input", *map(str, inputs), "--tokenizer", "gpt2", "--out", str(tmp_path / out),
            "--workers", "1", "--progress", "false", "--val-fraction", "0", *extra]
    return prep_main(argv)


def check_skip(tmp_path, inputs, name, expected_skips, *extra):
    """With --on-error skip: exit 0 and per-file counts that add up; returns the input entry of `name`."""
    out = f"skip-{name}"
    assert run(tmp_path, inputs, "--on-error", "skip", *extra, out=out) == 0
    manifest = read_manifest(tmp_path / out)
    for entry in manifest["inputs"]:
        assert entry["read"] == entry["written"] + sum(entry["skipped"].values())
    entry = next(e for e in manifest["inputs"] if e["path"].endswith(name))
    assert entry["skipped"] == expected_skips
    return entry


@pytest.fixture
def good_jsonl(tmp_path, shared_data):
    path = tmp_path / "good.jsonl"
    lines = (shared_data / "tinystories/train-head.jsonl").read_text().splitlines()[:20]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_jsonl_with(tmp_path, good_jsonl, bad_line: bytes, at: int = 5):
    lines = good_jsonl.read_bytes().splitlines()
    lines.insert(at, bad_line)
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_malformed_json_line(tmp_path, good_jsonl, capsys):
    bad = write_jsonl_with(tmp_path, good_jsonl, b'{"text": "unterminated')
    assert run(tmp_path, [bad]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:6: malformed JSON" in err and "--on-error skip" in err
    entry = check_skip(tmp_path, [bad], "bad.jsonl", {"malformed_json": 1})
    assert (entry["read"], entry["written"]) == (21, 20)


def test_invalid_utf8_in_jsonl_and_txt(tmp_path, good_jsonl, capsys):
    bad = write_jsonl_with(tmp_path, good_jsonl, b'{"text": "caf\xe9 latin-1, not UTF-8"}', at=2)
    assert run(tmp_path, [bad]) == 2
    assert f"{bad}:3: line is not valid UTF-8" in capsys.readouterr().err
    check_skip(tmp_path, [bad], "bad.jsonl", {"invalid_utf8": 1})
    txt = tmp_path / "bad.txt"
    txt.write_bytes(b"A fine paragraph.\n\nA bad \xff\xfe paragraph\nstill bad.\n\n\nAnother fine one.\n")
    assert run(tmp_path, [txt], out="txt") == 2
    assert f"{txt}:3: line 3 is not valid UTF-8" in capsys.readouterr().err
    entry = check_skip(tmp_path, [txt], "bad.txt", {"invalid_utf8": 1})
    assert entry["written"] == 2


def test_missing_text_column_parquet_and_jsonl(tmp_path, shared_data, good_jsonl, capsys):
    src = shared_data / "enwiki/enwiki-sample.parquet"
    table = pq.read_table(src).rename_columns(["body", "id", "url", "title"])
    renamed = tmp_path / "renamed.parquet"
    pq.write_table(table, renamed)
    assert run(tmp_path, [renamed]) == 2
    err = capsys.readouterr().err
    assert f"{renamed}: no column 'text' (columns: body, id, url, title); choose one with --text-column" in err
    check_skip(tmp_path, [renamed, good_jsonl], "renamed.parquet", {"missing_text_column": 106})
    assert run(tmp_path, [renamed], "--text-column", "body", out="fixed") == 0
    assert read_manifest(tmp_path / "fixed")["totals"]["documents"] == 106

    jsonl = tmp_path / "story.jsonl"
    jsonl.write_text(json.dumps({"story": "Once upon a time.", "id": 1}) + "\n")
    assert run(tmp_path, [jsonl], out="j") == 2
    assert f"{jsonl}:1: no string field 'text' (fields: id, story)" in capsys.readouterr().err


def test_corrupt_parquet_footer_and_row_group(tmp_path, shared_data, good_jsonl, capsys):
    broken = tmp_path / "broken.parquet"
    data = (shared_data / "enwiki/enwiki-sample.parquet").read_bytes()
    broken.write_bytes(data[: len(data) // 2])  # truncated download: no footer
    assert run(tmp_path, [broken]) == 2
    assert f"{broken}: not a readable Parquet file" in capsys.readouterr().err
    assert run(tmp_path, [broken, good_jsonl], "--on-error", "skip", out="skip1") == 0
    manifest = read_manifest(tmp_path / "skip1")
    entry = next(e for e in manifest["inputs"] if e["path"].endswith("broken.parquet"))
    assert entry["read"] == 0 and "not a readable Parquet file" in entry["error"]
    assert manifest["totals"]["documents"] == 20  # the good file still went through

    # a flipped data page in row group 1 of 2 (zstd pages, so the damage is detected, not decoded)
    table = pa.table({"text": [f"Document {i}. " * 40 for i in range(40)]})
    damaged = tmp_path / "damaged.parquet"
    pq.write_table(table, damaged, row_group_size=20, compression="zstd")
    column = pq.ParquetFile(damaged).metadata.row_group(1).column(0)
    start = column.dictionary_page_offset or column.data_page_offset
    raw = bytearray(damaged.read_bytes())
    for i in range(start + 30, start + 70):
        raw[i] ^= 0x5A
    damaged.write_bytes(bytes(raw))
    assert run(tmp_path, [damaged], out="rg") == 2
    assert f"{damaged}: row group 1: corrupt data" in capsys.readouterr().err
    entry = check_skip(tmp_path, [damaged], "damaged.parquet", {"corrupt_row_group": 20})
    assert entry["written"] == 20


def test_empty_corpus_and_no_matching_files(tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    blank = tmp_path / "blank.txt"
    blank.write_text("\n\n   \n")
    assert run(tmp_path, [empty, blank]) == 2
    assert "empty corpus: no document written from 2 input(s)" in capsys.readouterr().err
    assert run(tmp_path, [tmp_path / "nothing-*.parquet"], out="none") == 2
    assert "nothing-*.parquet: matches no files" in capsys.readouterr().err
    assert run(tmp_path, [tmp_path / "data.csv"], out="csv") == 2
    assert "input file not found" in capsys.readouterr().err
    (tmp_path / "data.csv").write_text("a,b\n")
    assert run(tmp_path, [tmp_path / "data.csv"], out="csv2") == 2
    assert "data.csv: unsupported input type" in capsys.readouterr().err


def test_empty_documents_are_counted_not_dropped(tmp_path, good_jsonl):
    path = tmp_path / "with-empty.jsonl"
    path.write_text(good_jsonl.read_text() + json.dumps({"text": "   "}) + "\n" + json.dumps({"text": ""}) + "\n")
    assert run(tmp_path, [path]) == 0  # not an error, but visible
    entry = read_manifest(tmp_path / "prep")["inputs"][0]
    assert (entry["read"], entry["written"], entry["skipped"]) == (22, 20, {"empty": 2})


def test_hundred_megabyte_document(tmp_path, good_jsonl, capsys):
    """A 100 MB "document" (e.g. a mis-parsed dump) is bad input, not something to tokenize for minutes."""
    big = tmp_path / "big.jsonl"
    with big.open("w") as fh:
        fh.write(good_jsonl.read_text())
        fh.write(json.dumps({"text": "spam " * 20_000_000}) + "\n")  # 100 MB
        fh.write(json.dumps({"text": "A short story after the big one."}) + "\n")
    assert run(tmp_path, [big]) == 2  # the default limit (8 MB)
    assert f"{big}:21: document of 100,000,000 bytes exceeds --max-doc-bytes" in capsys.readouterr().err
    entry = check_skip(tmp_path, [big], "big.jsonl", {"too_long": 1})
    assert entry["written"] == 21
    big.unlink()
    shutil.rmtree(tmp_path / "skip-big.jsonl")
    txt = tmp_path / "big.txt"
    with txt.open("w") as fh:  # the same in plain text, streamed line by line
        fh.write("Short one.\n\n" + ("spam " * 20 + "\n") * 1_000_000 + "\nShort two.\n")
    entry = check_skip(tmp_path, [txt], "big.txt", {"too_long": 1}, "--max-doc-bytes", "50000000")
    assert entry["written"] == 2


def test_truncated_compressed_jsonl(tmp_path, shared_data, capsys):
    """A cut-off download must not end quietly as a shorter corpus (zstd's stream reader would)."""
    import gzip

    src = shared_data / "tinystories/train-lower.jsonl.zst"
    cut = tmp_path / "cut.jsonl.zst"
    cut.write_bytes(src.read_bytes()[:500_000])
    assert run(tmp_path, [cut]) == 2
    assert "cut.jsonl.zst:" in (err := capsys.readouterr().err) and "last zstd frame is incomplete" in err
    entry = check_skip(tmp_path, [cut], "cut.jsonl.zst", {"corrupt_stream": 1})
    assert entry["written"] > 1000
    gz = tmp_path / "cut.jsonl.gz"
    gz.write_bytes(gzip.compress((shared_data / "tinystories/train-head.jsonl").read_bytes())[:200_000])
    assert run(tmp_path, [gz], out="gz") == 2
    assert "cut.jsonl.gz:" in capsys.readouterr().err
    # two concatenated zstd frames are one valid file
    two = tmp_path / "two.jsonl.zst"
    two.write_bytes(src.read_bytes() * 2)
    assert run(tmp_path, [two], out="two") == 0
    assert read_manifest(tmp_path / "two")["inputs"][0]["written"] == 2 * 5511
