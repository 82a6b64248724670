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
        self._docs: list[list[int]] = []  # token lists of the current sample (joined once, at flush)
        self._lengths: list[int] = []
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
        # one pass over the documents' lists, no intermediate concatenated list
        tokens = np.fromiter(itertools.chain.from_iterable(self._docs), dtype=self.dtype, count=self._pending)
        for ext, payload in encode_sample(tokens, np.array(self._lengths, dtype="<u4"), self.dtype).items():
            self._tar.addfile(*_member(f"{key}.{ext}", payload))
        self._samples += 1
        self._shard_docs += len(self._lengths)
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
