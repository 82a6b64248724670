"""Writing one split of one task: documents -> samples -> deterministic plain tar shards.

Byte-identical output for identical input is the point: tar headers carry no time, owner or
permissions from the machine (mtime 0, uid/gid 0, mode 0644, USTAR), samples and shards are cut at
fixed token counts, and each shard appears under its final name only when complete (temp + rename).
"""
from __future__ import annotations

import hashlib
import io
import itertools
import os
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from data_prep.format import FILE_MODE, encode_sample, sample_key, shard_name


def _member(name: str, payload: bytes) -> tuple[tarfile.TarInfo, io.BytesIO]:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(payload), 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info, io.BytesIO(payload)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class SplitWriter:
    """Accumulates documents of one split of one task; cuts samples at `sample_tokens` and shards at
    `shard_tokens` (both checked after whole documents, so documents are never split)."""

    def __init__(self, out_dir: Path, split: str, task: int, dtype: np.dtype, sample_tokens: int,
                 shard_tokens: int):
        self.out_dir, self.split, self.task, self.dtype = Path(out_dir), split, task, dtype
        self.sample_tokens, self.shard_tokens = sample_tokens, shard_tokens
        self.shards: list[dict] = []
        self.utf8_bytes = self.tokens = 0  # running totals (progress)
        # the open sample: per-document token lists and lengths (add), or token and length arrays
        # (add_block); a writer is fed one way or the other, and joins them once, at flush
        self._docs: list = []
        self._lengths: list = []
        self._pending = 0  # tokens in self._docs
        self._tar: tarfile.TarFile | None = None
        self._tmp = ""
        self._shard_docs = self._shard_tokens = self._samples = 0

    def add(self, ids: list[int], utf8_bytes: int) -> None:
        """One tokenized document, EOS already appended."""
        n = len(ids)
        self._docs.append(ids)
        self._lengths.append(n)
        self.utf8_bytes += utf8_bytes
        self.tokens += n
        self._pending += n
        if self._pending >= self.sample_tokens:
            self._flush_sample()
            if self._shard_tokens >= self.shard_tokens:
                self._close_shard()

    def add_block(self, tokens: np.ndarray, lengths: np.ndarray, utf8_bytes: int) -> None:
        """Documents back to back (EOS included; `lengths` one per document), cut into samples and shards
        exactly where `add` per document would cut: after the document that reaches the limit."""
        if not len(lengths):
            return
        self.utf8_bytes += utf8_bytes
        self.tokens += len(tokens)
        ends = np.cumsum(lengths, dtype=np.int64)
        first_doc = first_token = 0
        while first_doc < len(lengths):
            # the first document whose end brings the open sample to sample_tokens (ends are increasing)
            last = int(np.searchsorted(ends, first_token + self.sample_tokens - self._pending))
            if last >= len(lengths):
                self._append(tokens[first_token:], lengths[first_doc:])
                return
            end = int(ends[last])
            self._append(tokens[first_token:end], lengths[first_doc:last + 1])
            self._flush_sample()
            if self._shard_tokens >= self.shard_tokens:
                self._close_shard()
            first_doc, first_token = last + 1, end

    def _append(self, tokens: np.ndarray, lengths: np.ndarray) -> None:
        # copies, not views: a view would keep its whole block alive until this sample closes (a rare
        # split's writer would hold dozens of blocks: memory growing with the corpus)
        self._docs.append(tokens.copy())
        self._lengths.append(lengths.copy())
        self._pending += len(tokens)

    def _sample_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The open sample's tokens (self.dtype) and lengths (<u4): `add` gives per-document lists and
        ints, `add_block` arrays (concatenated once here, not per document)."""
        if self._docs and isinstance(self._docs[0], list):
            tokens = np.fromiter(itertools.chain.from_iterable(self._docs), dtype=self.dtype, count=self._pending)
            return tokens, np.array(self._lengths, dtype="<u4")
        # one pass: ids fit the dtype (uint16 only for vocabularies of <= 65,536), so the cast is exact
        return (np.concatenate(self._docs, dtype=self.dtype, casting="unsafe"),
                np.concatenate(self._lengths, dtype="<u4", casting="unsafe"))

    def _open_shard(self) -> None:
        fd, self._tmp = tempfile.mkstemp(dir=self.out_dir, prefix=f".{self.split}-{self.task:05d}-", suffix=".tmp")
        os.close(fd)
        self._tar = tarfile.open(self._tmp, "w", format=tarfile.USTAR_FORMAT)
        self._shard_docs = self._shard_tokens = self._samples = 0

    def _flush_sample(self) -> None:
        if not self._lengths:
            return
        if self._tar is None:
            self._open_shard()
        seq = len(self.shards)
        key = sample_key(self.task, seq, self._samples)
        tokens, lengths = self._sample_arrays()
        for ext, payload in encode_sample(tokens, lengths, self.dtype).items():
            self._tar.addfile(*_member(f"{key}.{ext}", payload))
        self._samples += 1
        self._shard_docs += len(lengths)
        self._shard_tokens += len(tokens)
        self._docs, self._lengths, self._pending = [], [], 0

    def _close_shard(self) -> None:
        if self._tar is None:
            return
        self._tar.close()
        with open(self._tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(self._tmp, FILE_MODE)
        name = shard_name(self.split, self.task, len(self.shards))
        final = self.out_dir / name
        os.replace(self._tmp, final)
        self.shards.append({"name": name, "split": self.split, "task": self.task, "seq": len(self.shards),
                            "documents": self._shard_docs, "tokens": self._shard_tokens,
                            "samples": self._samples, "bytes": final.stat().st_size,
                            "sha256": file_sha256(final)})
        self._tar = None

    def close(self) -> list[dict]:
        self._flush_sample()
        self._close_shard()
        return self.shards

    def abort(self) -> None:
        if self._tar is not None:
            self._tar.close()
            Path(self._tmp).unlink(missing_ok=True)
            self._tar = None
