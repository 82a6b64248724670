"""Streaming document readers: Parquet (row groups), JSON lines (.jsonl/.gz/.zst), plain text, builtin.

Each reader yields (text, UTF-8 bytes) per document of one *unit* (a file, or some row groups of a Parquet
file) and keeps per-file counts in an `InputStats`: every document read is either yielded (the caller
counts it written) or counted as skipped by reason. Problems raise `InputError` naming the file and line
or row group, unless `on_error == "skip"`, in which case they become counted skips. Memory is bounded by
one Parquet batch or one line/document, never a whole file.
"""
from __future__ import annotations

import gzip
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import zstandard

from data_prep.builtin_corpus import BUILTIN_PREFIX, builtin_documents

EOT_LINE = "<|endoftext|>"
EOT_BYTES = EOT_LINE.encode()
PARQUET_BATCH_ROWS = 1024
TXT_RULE_EOT = "endoftext-lines"
TXT_RULE_BLANK = "blank-lines"


# (text, its UTF-8 bytes): encoded once, the bytes count bytes/token and their hash picks the split.
# A plain tuple: a NamedTuple's constructor costs a visible share of the per-document budget.
Document = tuple[str, bytes]


class InputError(ValueError):
    """Bad input; the message names the file (and line or row group) and the fix."""


@dataclass
class InputStats:
    read: int = 0
    written: int = 0
    skipped: Counter = field(default_factory=Counter)
    notes: dict = field(default_factory=dict)  # e.g. the txt separation rule used

    def to_dict(self) -> dict:
        return {"read": self.read, "written": self.written, "skipped": dict(sorted(self.skipped.items())),
                **self.notes}


def input_kind(path: str) -> str:
    if path.startswith(BUILTIN_PREFIX):
        return "builtin"
    name = path.lower()
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith((".jsonl", ".jsonl.gz", ".jsonl.zst", ".json.gz", ".ndjson")):
        return "jsonl"
    if name.endswith(".txt"):
        return "txt"
    raise InputError(f"{path}: unsupported input type; use .parquet, .jsonl(.gz|.zst), .txt or builtin:python-docs")


# Where a document sits: a line number, (row group, row), or a ready string; formatted only for errors
# (building a string per document would cost more than the check itself).
Where = int | tuple[int, int] | str


def _where(where: Where) -> str:
    if isinstance(where, int):
        return f":{where}"
    if isinstance(where, tuple):
        return f": row group {where[0]}, row {where[1]}"
    return where


class _Reader:
    """Shared skip/raise policy and the size and UTF-8 checks every document goes through."""

    def __init__(self, path: str, stats: InputStats, on_error: str, max_doc_bytes: int, text_column: str):
        self.path, self.stats, self.on_error = path, stats, on_error
        self.max_doc_bytes, self.text_column = max_doc_bytes, text_column

    def problem(self, reason: str, where: Where, message: str, count: int = 1) -> None:
        """Raise, or count `count` documents skipped for `reason`."""
        if self.on_error != "skip":
            raise InputError(f"{self.path}{_where(where)}: {message} "
                             "(or pass --on-error skip to count and skip it)")
        self.stats.skipped[reason] += count

    def check(self, text: str, where: Where) -> Document | None:
        """The document if it may be tokenized, else None after counting (or raising) the reason."""
        if not text or text.isspace():  # (isspace: no copy, unlike strip)
            self.stats.skipped["empty"] += 1  # nothing to learn from; always a counted skip, never an error
            return None
        if len(text) * 4 > self.max_doc_bytes:  # only then can the UTF-8 size exceed the limit
            size = len(text.encode("utf-8", "surrogatepass"))
            if size > self.max_doc_bytes:
                self.problem("too_long", where, f"document of {size:,} bytes exceeds --max-doc-bytes "
                             f"{self.max_doc_bytes:,}; raise the limit if it is genuine")
                return None
        try:
            return text, text.encode("utf-8")
        except UnicodeEncodeError as exc:  # lone surrogates, e.g. from a JSON "\ud800" escape
            self.problem("invalid_utf8", where, f"text is not valid Unicode ({exc.reason} at {exc.start})")
            return None


def _split_lines(pieces: list[bytes], data: bytes) -> Iterator[bytes]:
    """Complete lines of `data`, prefixed by the unfinished line in `pieces` (updated in place); only the
    new data is scanned, so a 100 MB line costs linear time."""
    if b"\n" not in data:
        pieces.append(data)
        return
    lines = data.split(b"\n")
    yield b"".join(pieces) + lines[0] + b"\n"
    for line in lines[1:-1]:
        yield line + b"\n"
    pieces[:] = [lines[-1]]


def zstd_lines(path: str, chunk_bytes: int = 1 << 20) -> Iterator[bytes]:
    """Lines of a (multi-frame) .zst file, streamed. A truncated last frame raises ZstdError instead of
    ending quietly (zstandard's stream_reader just stops, which would drop documents silently)."""
    with open(path, "rb") as fh:
        decoder, fed, pieces = zstandard.ZstdDecompressor().decompressobj(), False, []
        while chunk := fh.read(chunk_bytes):
            while chunk:
                data, chunk, fed = decoder.decompress(chunk), b"", True
                yield from _split_lines(pieces, data)
                if decoder.eof:  # a frame ended; the next one (if any) starts in unused_data
                    chunk = decoder.unused_data
                    decoder, fed = zstandard.ZstdDecompressor().decompressobj(), False
        if fed and not decoder.eof:
            raise zstandard.ZstdError("truncated file: the last zstd frame is incomplete")
        if rest := b"".join(pieces):
            yield rest


class JsonlReader(_Reader):
    def lines(self) -> Iterator[bytes]:
        if self.path.endswith(".zst"):
            yield from zstd_lines(self.path)
            return
        opener = gzip.open if self.path.endswith(".gz") else open
        with opener(self.path, "rb") as fh:
            yield from fh

    def __iter__(self) -> Iterator[Document]:
        stats, check, column, loads = self.stats, self.check, self.text_column, json.loads
        lineno = 0
        try:
            for lineno, line in enumerate(self.lines(), 1):
                if line.isspace():
                    continue  # blank lines are not records
                stats.read += 1
                try:  # the fast path; anything unusual goes through parse() for a precise error
                    text = loads(line)[column]
                    if type(text) is not str:
                        raise TypeError
                except Exception:  # noqa: BLE001
                    text = self.parse(line, lineno)
                if text is not None and (doc := check(text, lineno)) is not None:
                    yield doc
        except (OSError, EOFError, zstandard.ZstdError) as exc:  # truncated/corrupt .gz/.zst
            stats.read += 1
            self.problem("corrupt_stream", lineno + 1, f"compressed stream is corrupt after line {lineno} "
                         f"({exc}); re-download the file")

    def parse(self, line: bytes, where: int) -> str | None:
        try:
            record = json.loads(line)  # bytes: decoded as strict UTF-8 inside, without an extra copy
        except UnicodeDecodeError as exc:
            self.problem("invalid_utf8", where, f"line is not valid UTF-8 ({exc.reason} at byte {exc.start})")
            return None
        except json.JSONDecodeError as exc:
            self.problem("malformed_json", where, f"malformed JSON ({exc.msg} at column {exc.colno})")
            return None
        if not isinstance(record, dict):
            self.problem("malformed_json", where, f"expected a JSON object, got {type(record).__name__}")
            return None
        text = record.get(self.text_column)
        if not isinstance(text, str):
            fields = ", ".join(sorted(record)) or "none"
            self.problem("missing_text", where, f"no string field {self.text_column!r} (fields: {fields}); "
                         "choose the field with --text-column")
            return None
        return text


class TxtReader(_Reader):
    """Documents separated by `<|endoftext|>` lines when the file has any, else by runs of blank lines."""

    def rule(self) -> str:
        with open(self.path, "rb") as fh:  # a streaming pre-pass: decide the rule before reading documents
            for line in fh:
                if line.strip() == EOT_BYTES:
                    return TXT_RULE_EOT
        return TXT_RULE_BLANK

    def __iter__(self) -> Iterator[Document]:
        rule = self.rule()
        self.stats.notes["txt_rule"] = rule
        parts: list[str] = []
        size, start, oversized, bad = 0, 1, False, None
        with open(self.path, "rb") as fh:
            for lineno, raw in enumerate(fh, 1):
                stripped = raw.strip()
                is_sep = stripped == EOT_BYTES if rule == TXT_RULE_EOT else not stripped
                if is_sep:
                    yield from self.finish(parts, size, start, oversized, bad)
                    parts, size, start, oversized, bad = [], 0, lineno + 1, False, None
                    continue
                size += len(raw)
                if size > self.max_doc_bytes:
                    oversized, parts = True, []  # keep consuming to the separator; memory stays bounded
                elif not oversized:
                    try:
                        parts.append(raw.decode("utf-8"))
                    except UnicodeDecodeError as exc:
                        bad = bad or f"line {lineno} is not valid UTF-8 ({exc.reason} at byte {exc.start})"
            yield from self.finish(parts, size, start, oversized, bad)

    def finish(self, parts: list[str], size: int, start: int, oversized: bool,
               bad: str | None) -> Iterator[Document]:
        if not parts and not oversized and bad is None:
            return  # separator runs and file edges hold no document
        self.stats.read += 1
        where = start  # the first line of the document
        if oversized:
            self.problem("too_long", where, f"document over --max-doc-bytes {self.max_doc_bytes:,}; raise the "
                         "limit if it is genuine")
        elif bad:
            self.problem("invalid_utf8", where, bad)
        elif (doc := self.check("".join(parts).strip(), where)) is not None:
            yield doc


class ParquetReader(_Reader):
    def __init__(self, *args, row_groups: list[int], **kwargs):
        super().__init__(*args, **kwargs)
        self.row_groups = row_groups

    def __iter__(self) -> Iterator[Document]:
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(self.path)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad footer
            raise InputError(f"{self.path}: not a readable Parquet file ({exc}); re-download it") from None
        names = pf.schema_arrow.names
        if self.text_column not in names:
            rows = sum(pf.metadata.row_group(i).num_rows for i in self.row_groups)
            self.stats.read += rows
            self.problem("missing_text_column", "", f"no column {self.text_column!r} (columns: "
                         f"{', '.join(names)}); choose one with --text-column", count=rows)
            return
        for rg in self.row_groups:
            yield from self.row_group(pf, rg)

    def row_group(self, pf, rg: int) -> Iterator[Document]:
        expected = pf.metadata.row_group(rg).num_rows
        seen = 0
        try:
            for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS, row_groups=[rg],
                                         columns=[self.text_column], use_threads=False):
                column = batch.column(0)
                for row, value in enumerate(column.to_pylist(), seen):
                    self.stats.read += 1
                    if isinstance(value, bytes):
                        try:
                            value = value.decode("utf-8")
                        except UnicodeDecodeError as exc:
                            self.problem("invalid_utf8", (rg, row), f"not UTF-8 ({exc.reason})")
                            continue
                    if value is None:
                        self.problem("missing_text", (rg, row), "text is null")
                        continue
                    if (doc := self.check(value, (rg, row))) is not None:
                        yield doc
                seen += len(column)
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - decompression/decoding errors from a corrupt row group
            rest = expected - seen
            self.stats.read += rest
            self.problem("corrupt_row_group", f": row group {rg}", f"corrupt data ({type(exc).__name__}: "
                         f"{exc}); re-download the file", count=rest)


def read_documents(unit: dict, stats: InputStats, *, text_column: str, on_error: str,
                   max_doc_bytes: int) -> Iterator[Document]:
    """The documents of one planned unit ({"path", "kind", "row_groups"?, "part"?})."""
    path, kind = unit["path"], unit["kind"]
    common = dict(stats=stats, on_error=on_error, max_doc_bytes=max_doc_bytes, text_column=text_column)
    if kind == "builtin":
        reader = _Reader(path, **common)
        for name, text, skip_reason in builtin_documents(path, unit["part"]):
            stats.read += 1
            if skip_reason:
                stats.skipped[skip_reason] += 1
            elif (doc := reader.check(text, f" ({name})")) is not None:
                yield doc
        return
    if not Path(path).is_file():
        raise InputError(f"{path}: input file disappeared since planning; restore it or re-plan")
    if kind == "parquet":
        yield from ParquetReader(path, row_groups=unit["row_groups"], **common)
    elif kind == "jsonl":
        yield from JsonlReader(path, **common)
    elif kind == "txt":
        yield from TxtReader(path, **common)
    else:
        raise InputError(f"{path}: unknown input kind {kind!r}")
