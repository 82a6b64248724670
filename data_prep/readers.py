"""Streaming document readers: Parquet (row groups), JSON lines (.jsonl/.gz/.zst), plain text, builtin.

Each reader yields (text, UTF-8 bytes) per document of one *unit* (a file, or some row groups of a Parquet
file) and keeps per-file counts in an `InputStats`: every document read is either yielded (the caller
counts it written) or counted as skipped by reason. Problems raise `InputError` naming the file and line
or row group, unless `on_error == "skip"`, in which case they become counted skips. Memory is bounded by
one Parquet batch or one line/document, never a whole file.
"""
from __future__ import annotations

import functools
import gzip
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import Any, Callable, Iterator

import msgspec
import zstandard

from data_prep.builtin_corpus import BUILTIN_PREFIX, builtin_documents
from stackcore.errors import UserError

EOT_LINE = "<|endoftext|>"
EOT_BYTES = EOT_LINE.encode()
PARQUET_BATCH_ROWS = 1024
TXT_RULE_EOT = "endoftext-lines"
TXT_RULE_BLANK = "blank-lines"


# (text, its UTF-8 bytes): encoded once, the bytes count bytes/token and their hash picks the split.
# A plain tuple: a NamedTuple's constructor costs a visible share of the per-document budget.
Document = tuple[str, bytes]
# Many documents at once, (texts, their UTF-8 bytes): the per-document Python cost (reading, parsing,
# checking, a tiktoken call) is what limits short-document throughput, so the hot path works on blocks.
Block = tuple[list[str], list[bytes]]
BLOCK_BYTES = 1 << 20  # JSON lines are read, decoded and checked this many bytes at a time


class InputError(UserError, ValueError):
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

    def check_block(self, texts: list[str], where: Callable[[int], Where]) -> Block:
        """`check` for many documents: the common case (none empty, too long or invalid) in a few C-level
        passes; any doubt re-checks the block per document, so counts and errors are exactly `check`'s.
        `where(i)` locates document i for an error."""
        if all(texts) and not any(map(str.isspace, texts)):
            try:
                utf8s = list(map(str.encode, texts))  # UTF-8; raises on lone surrogates
            except UnicodeEncodeError:
                utf8s = None
            if utf8s is not None and max(map(len, utf8s), default=0) <= self.max_doc_bytes:
                return texts, utf8s
        docs = [doc for i, text in enumerate(texts) if (doc := self.check(text, where(i))) is not None]
        return [text for text, _ in docs], [utf8 for _, utf8 in docs]


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


def zstd_chunks(path: str, chunk_bytes: int = BLOCK_BYTES, read_bytes: int = 1 << 16) -> Iterator[bytes]:
    """Decompressed data of a (multi-frame) .zst file, streamed in pieces of about `chunk_bytes`: the input
    is fed `read_bytes` at a time, so a piece stays near `chunk_bytes` however well the file compresses
    (memory stays flat). A truncated last frame raises ZstdError instead of ending quietly (zstandard's
    stream_reader just stops, which would drop documents silently); what came before it is yielded first."""
    pending, size = [], 0
    try:
        with open(path, "rb") as fh:
            decoder, fed = zstandard.ZstdDecompressor().decompressobj(), False
            while chunk := fh.read(read_bytes):
                while chunk:
                    data, chunk, fed = decoder.decompress(chunk), b"", True
                    pending.append(data)
                    size += len(data)
                    if decoder.eof:  # a frame ended; the next one (if any) starts in unused_data
                        chunk = decoder.unused_data
                        decoder, fed = zstandard.ZstdDecompressor().decompressobj(), False
                if size >= chunk_bytes:
                    yield b"".join(pending)
                    pending, size = [], 0
            if fed and not decoder.eof:
                raise zstandard.ZstdError("truncated file: the last zstd frame is incomplete")
    except zstandard.ZstdError:
        if size:
            yield b"".join(pending)
        raise
    if size:
        yield b"".join(pending)


def zstd_lines(path: str, chunk_bytes: int = BLOCK_BYTES) -> Iterator[bytes]:
    """Lines of a (multi-frame) .zst file, streamed (see zstd_chunks)."""
    pieces: list[bytes] = []
    for data in zstd_chunks(path, chunk_bytes):
        yield from _split_lines(pieces, data)
    if rest := b"".join(pieces):
        yield rest


def line_blocks(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Whole lines, many at a time: every block but the file's last ends with a newline. A line longer
    than a chunk is joined once it ends (linear time)."""
    pieces: list[bytes] = []
    for chunk in chunks:
        cut = chunk.rfind(b"\n") + 1
        if not cut:
            pieces.append(chunk)
            continue
        yield b"".join(pieces) + chunk[:cut] if pieces else chunk[:cut]
        pieces = [chunk[cut:]]
    if rest := b"".join(pieces):
        yield rest


@functools.lru_cache(maxsize=8)
def _record_decoder(column: str) -> Callable[[bytes], Any]:
    """msgspec decoder of one JSON line into an object whose `.text` is the string field `column`; other
    fields are skipped (parsed, not built)."""
    record = msgspec.defstruct("Record", [("text", str)], rename={"text": column})
    return msgspec.json.Decoder(record).decode


_TEXT = attrgetter("text")


class JsonlReader(_Reader):
    def lines(self) -> Iterator[bytes]:
        if self.path.endswith(".zst"):
            yield from zstd_lines(self.path)
            return
        opener = gzip.open if self.path.endswith(".gz") else open
        with opener(self.path, "rb") as fh:
            yield from fh

    def chunks(self) -> Iterator[bytes]:
        if self.path.endswith(".zst"):
            yield from zstd_chunks(self.path)
            return
        opener = gzip.open if self.path.endswith(".gz") else open
        with opener(self.path, "rb") as fh:
            while chunk := fh.read(BLOCK_BYTES):
                yield chunk

    def __iter__(self) -> Iterator[Document]:
        for texts, utf8s in self.blocks():
            yield from zip(texts, utf8s)

    def blocks(self) -> Iterator[Block]:
        decode, lineno = _record_decoder(self.text_column), 0
        try:
            for data in line_blocks(self.chunks()):
                lines = data.split(b"\n")
                if not lines[-1]:
                    lines.pop()
                first, lineno = lineno + 1, lineno + len(lines)
                yield self.decode_block(data, lines, first, decode)
        except (OSError, EOFError, zstandard.ZstdError) as exc:  # truncated/corrupt .gz/.zst
            self.stats.read += 1
            self.problem("corrupt_stream", lineno + 1, f"compressed stream is corrupt after line {lineno} "
                         f"({exc}); re-download the file")

    def decode_block(self, data: bytes, lines: list[bytes], first: int, decode) -> Block:
        """The fast path: one msgspec call per line, no dict, strict UTF-8 checked once for the block (msgspec
        does not check the fields it skips; json.loads would). Anything unusual (a blank line, bad JSON,
        a missing or non-string field) sends the block through the per-line path, which names the problem."""
        try:
            data.decode("utf-8")
            texts = list(map(_TEXT, map(decode, lines)))
        except Exception:  # noqa: BLE001 - whatever it is, line_by_line reports it precisely
            # with their newlines back: json's error columns count them (as when read line by line)
            newline = [line + b"\n" for line in lines]
            if not data.endswith(b"\n"):
                newline[-1] = lines[-1]
            return self.line_by_line(newline, first)
        self.stats.read += len(texts)
        return self.check_block(texts, lambda i: first + i)

    def line_by_line(self, lines: list[bytes], first: int) -> Block:
        stats, check, column, loads = self.stats, self.check, self.text_column, json.loads
        docs = []
        for lineno, line in enumerate(lines, first):
            if line.isspace() or not line:
                continue  # blank lines are not records
            stats.read += 1
            try:
                text = loads(line)[column]
                if type(text) is not str:
                    raise TypeError
            except Exception:  # noqa: BLE001
                text = self.parse(line, lineno)
            if text is not None and (doc := check(text, lineno)) is not None:
                docs.append(doc)
        return [text for text, _ in docs], [utf8 for _, utf8 in docs]

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


# Separators, as regexes over a block of whole lines (bytes.strip() whitespace: " \t\r\x0b\x0c"):
# - endoftext rule: each `<|endoftext|>` line, one capture group so that split() returns
#   [document, separator, document, ..., rest] (documents may be empty: consecutive separators);
# - blank rule: each run of blank lines *with the newline that ends the line before it*, matched on
#   "\n" + block: the literal "\n" in front makes the regex skip from newline to newline (4x faster than
#   a ^ anchor tried at every byte). Documents then lack their last "\n" (counted back in their size).
# Neither ever matches the empty string: that would cut a document at the end of a block.
_WS = rb"[ \t\r\x0b\x0c]"
_EOT_LINE = re.compile(rb"(?m)(^" + _WS + b"*" + re.escape(EOT_BYTES) + _WS + rb"*(?:\n|\Z))")
_BLANK_RUN = re.compile(rb"\n((?:" + _WS + rb"*\n)+|(?:" + _WS + rb"*\n)*" + _WS + rb"+\Z)")

# One block cut at its separators: (bytes of the open document in it, their size in the file, the
# documents that begin and end in it, what each one's size adds to its length (a newline taken by the
# separator), offset of the rest, line numbers of those documents as a function of the block's first line).
Cut = tuple[bytes, int, list[bytes], int, int, Callable[[int], list[int]]]


def _cut_at_endoftext(data: bytes) -> Cut | None:
    parts = _EOT_LINE.split(data)
    if len(parts) == 1:
        return None
    docs = [part for part in parts[2:-1:2] if part]
    return parts[0], len(parts[0]), docs, 0, len(data) - len(parts[-1]), lambda line: _part_lines(parts, line, 0)


def _cut_at_blank_lines(data: bytes) -> Cut | None:
    parts = _BLANK_RUN.split(b"\n" + data)
    if len(parts) == 1:
        return None
    return (parts[0][1:], len(parts[0]), parts[2:-1:2], 1, len(data) - len(parts[-1]),
            lambda line: _part_lines(parts, line, 1))


def _part_lines(parts: list[bytes], line: int, run_newline: int) -> list[int]:
    """First lines of the non-empty documents in parts[2:-1:2] (split() output of a block whose first line
    is `line`; `run_newline`: each separator also took one "\n" left out of parts, and one was prepended)."""
    starts, newlines = [], -run_newline
    for k, part in enumerate(parts[:-1]):
        if k % 2:
            newlines += run_newline
        elif k >= 2 and part:
            starts.append(line + newlines)
        newlines += part.count(b"\n")
    return starts


class TxtReader(_Reader):
    """Documents separated by `<|endoftext|>` lines when the file has any, else by runs of blank lines.
    Whole blocks of lines are split at the separators by one regex; a document is its lines' bytes
    decoded, then stripped. Documents may span blocks; an oversized one is only counted, never held.
    Line numbers (for errors) are worked out only when a block has a problem."""

    def chunks(self) -> Iterator[bytes]:
        with open(self.path, "rb") as fh:
            while chunk := fh.read(BLOCK_BYTES):
                yield chunk

    def rule(self) -> str:
        for data in line_blocks(self.chunks()):  # a streaming pre-pass: decide the rule before reading
            if EOT_BYTES in data and _EOT_LINE.search(data):
                return TXT_RULE_EOT
        return TXT_RULE_BLANK

    def __iter__(self) -> Iterator[Document]:
        for texts, utf8s in self.blocks():
            yield from zip(texts, utf8s)

    def blocks(self) -> Iterator[Block]:
        rule = self.rule()
        self.stats.notes["txt_rule"] = rule
        cut_block = _cut_at_endoftext if rule == TXT_RULE_EOT else _cut_at_blank_lines
        # the open document: its pieces (None once over the limit), size and first line; `line`: data's first
        self.pieces, self.size, self.start, line = [], 0, 1, 1
        for data in line_blocks(self.chunks()):
            cut = cut_block(data)
            if cut is None:  # no separator: the whole block continues the open document
                self.extend(data, len(data))
                line += data.count(b"\n")
                continue
            head, head_size, docs, extra, rest, lines = cut
            self.extend(head, head_size)
            first = line
            yield self.decode_cut(self.close_document(), docs, extra, lambda: lines(first))
            self.start = line + data.count(b"\n", 0, rest)
            self.extend(data[rest:], len(data) - rest)
            line += data.count(b"\n")
        yield self.decode([(*self.close_document(), self.start)], lambda: [])

    def extend(self, piece: bytes, size: int) -> None:
        self.size += size
        if self.size > self.max_doc_bytes:
            self.pieces = None  # keep reading to the separator; memory stays bounded
        elif piece:
            self.pieces.append(piece)

    def close_document(self) -> tuple[bytes | None, int]:
        """(bytes (None if oversized), size in the file) of the open document (size 0: it has no lines)."""
        doc = (None if self.pieces is None else b"".join(self.pieces), self.size)
        self.pieces, self.size = [], 0
        return doc

    def decode_cut(self, first: tuple[bytes | None, int], docs: list[bytes], extra: int,
                   lines: Callable[[], list[int]]) -> Block:
        """The open document just closed (`first`: bytes, size) and the block's whole documents (their
        sizes: length + `extra`): decoded and stripped in C-level passes when nothing is wrong, else
        through `decode`, which names each problem."""
        data, size = first
        if data is not None and size <= self.max_doc_bytes and (
                not docs or max(map(len, docs)) + extra <= self.max_doc_bytes):
            try:
                head = [data.decode("utf-8").strip()] if size else []
                texts = head + list(map(str.strip, map(bytes.decode, docs)))
            except UnicodeDecodeError:
                pass
            else:
                self.stats.read += len(texts)
                start = [self.start] if size else []
                return self.check_block(texts, lambda i: (start + lines())[i])
        return self.decode([(data, size, self.start)] + [(doc, len(doc) + extra, None) for doc in docs], lines)

    def decode(self, docs: list[tuple[bytes | None, int, int | None]], lines: Callable[[], list[int]]) -> Block:
        """Documents as (bytes or None if oversized, size, first line or None: then lines()[k] for the k-th
        such one); a size of 0 is no document (the open one may have none)."""
        docs = [doc for doc in docs if doc[1]]
        self.stats.read += len(docs)
        if all(data is not None and size <= self.max_doc_bytes for data, size, _ in docs):
            try:
                texts = [data.decode("utf-8").strip() for data, _, _ in docs]
                return self.check_block(texts, lambda i: _doc_starts(docs, lines)[i])
            except UnicodeDecodeError:
                pass
        starts, texts, kept = _doc_starts(docs, lines), [], []
        for (data, size, _), start in zip(docs, starts):  # the slow path names each problem
            if data is None or size > self.max_doc_bytes:
                self.problem("too_long", start, f"document over --max-doc-bytes {self.max_doc_bytes:,}; raise "
                             "the limit if it is genuine")
                continue
            try:
                texts.append(data.decode("utf-8").strip())
                kept.append(start)
            except UnicodeDecodeError:
                missing = b"\n" * (size - len(data))  # the last newline, taken by a blank-lines separator
                self.problem("invalid_utf8", start, _first_bad_line(data + missing, start))
        return self.check_block(texts, kept.__getitem__)


def _doc_starts(docs: list[tuple[bytes | None, int, int | None]], lines: Callable[[], list[int]]) -> list[int]:
    inner = iter(lines())
    return [start if start is not None else next(inner) for _, _, start in docs]


def _first_bad_line(data: bytes, first_line: int) -> str:
    """Which line of a document is not UTF-8, said as when lines were decoded one by one (with their "\n")."""
    lines = data.split(b"\n")
    for lineno, line in enumerate(lines, first_line):
        try:
            (line + b"\n" if lineno < first_line + len(lines) - 1 else line).decode("utf-8")
        except UnicodeDecodeError as exc:
            return f"line {lineno} is not valid UTF-8 ({exc.reason} at byte {exc.start})"
    return "not valid UTF-8"


class ParquetReader(_Reader):
    def __init__(self, *args, row_groups: list[int], **kwargs):
        super().__init__(*args, **kwargs)
        self.row_groups = row_groups

    def __iter__(self) -> Iterator[Document]:
        for texts, utf8s in self.blocks():
            yield from zip(texts, utf8s)

    def blocks(self) -> Iterator[Block]:
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

    def row_group(self, pf, rg: int) -> Iterator[Block]:
        import pyarrow as pa

        expected = pf.metadata.row_group(rg).num_rows
        seen = 0
        try:
            for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS, row_groups=[rg],
                                         columns=[self.text_column], use_threads=False):
                column = batch.column(0)
                values, first = column.to_pylist(), seen
                self.stats.read += len(values)
                seen += len(values)
                if column.null_count == 0 and (pa.types.is_string(column.type)
                                               or pa.types.is_large_string(column.type)):
                    yield self.check_block(values, lambda i: (rg, first + i))
                else:  # nulls or a binary column: row by row
                    yield self.row_by_row(values, rg, first)
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - decompression/decoding errors from a corrupt row group
            rest = expected - seen
            self.stats.read += rest
            self.problem("corrupt_row_group", f": row group {rg}", f"corrupt data ({type(exc).__name__}: "
                         f"{exc}); re-download the file", count=rest)

    def row_by_row(self, values: list, rg: int, first: int) -> Block:
        docs = []
        for row, value in enumerate(values, first):
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
                docs.append(doc)
        return [text for text, _ in docs], [utf8 for _, utf8 in docs]


def grouped(documents: Iterator[Document], block_bytes: int = BLOCK_BYTES) -> Iterator[Block]:
    """Documents of a per-document reader gathered into blocks of about `block_bytes` of text."""
    texts, utf8s, size = [], [], 0
    for text, utf8 in documents:
        texts.append(text)
        utf8s.append(utf8)
        size += len(utf8)
        if size >= block_bytes:
            yield texts, utf8s
            texts, utf8s, size = [], [], 0
    if texts:
        yield texts, utf8s


def _builtin_documents(unit: dict, stats: InputStats, common: dict) -> Iterator[Document]:
    reader = _Reader(unit["path"], **common)
    for name, text, skip_reason in builtin_documents(unit["path"], unit["part"]):
        stats.read += 1
        if skip_reason:
            stats.skipped[skip_reason] += 1
        elif (doc := reader.check(text, f" ({name})")) is not None:
            yield doc


def read_blocks(unit: dict, stats: InputStats, *, text_column: str, on_error: str,
                max_doc_bytes: int) -> Iterator[Block]:
    """The documents of one planned unit ({"path", "kind", "row_groups"?, "part"?}), many at a time.
    A block may be empty (every document in it skipped)."""
    path, kind = unit["path"], unit["kind"]
    common = dict(stats=stats, on_error=on_error, max_doc_bytes=max_doc_bytes, text_column=text_column)
    if kind == "builtin":
        yield from grouped(_builtin_documents(unit, stats, common))
        return
    if not Path(path).is_file():
        raise InputError(f"{path}: input file disappeared since planning; restore it or re-plan")
    if kind == "parquet":
        yield from ParquetReader(path, row_groups=unit["row_groups"], **common).blocks()
    elif kind == "jsonl":
        yield from JsonlReader(path, **common).blocks()
    elif kind == "txt":
        yield from TxtReader(path, **common).blocks()
    else:
        raise InputError(f"{path}: unknown input kind {kind!r}")


def read_documents(unit: dict, stats: InputStats, *, text_column: str, on_error: str,
                   max_doc_bytes: int) -> Iterator[Document]:
    """The documents of one planned unit, one at a time (see read_blocks)."""
    for texts, utf8s in read_blocks(unit, stats, text_column=text_column, on_error=on_error,
                                    max_doc_bytes=max_doc_bytes):
        yield from zip(texts, utf8s)
