"""`verify DIR` (every shard re-read and checked against the manifest) and `stats DIR` (lengths etc.)."""
from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Iterator

import numpy as np
import zstandard

from data_prep.format import LENGTHS_EXT, FormatError, decode_sample, read_manifest
from data_prep.shards import file_sha256


def iter_samples(path: Path) -> Iterator[tuple[str, dict]]:
    """(key, {ext: bytes}) per sample of a shard, in tar order (the same grouping webdataset uses)."""
    key, sample = None, {}
    with tarfile.open(path, "r:") as tar:
        for member in tar:
            name = member.name
            base, _, ext = name.partition(".")
            if base != key and sample:
                yield key, sample
                sample = {}
            key = base
            sample[ext] = tar.extractfile(member).read()
    if sample:
        yield key, sample


def iter_lengths(path: Path) -> Iterator[np.ndarray]:
    """The document-length arrays of a shard, skipping the token payloads (what `stats` needs)."""
    dctx = zstandard.ZstdDecompressor()
    with tarfile.open(path, "r:") as tar:
        for member in tar:
            if member.name.endswith("." + LENGTHS_EXT):
                yield np.frombuffer(dctx.decompress(tar.extractfile(member).read()), dtype="<u4")


def read_shard(path: Path, dtype: str, eos_id: int, vocab_size: int) -> tuple[int, int, list[np.ndarray]]:
    """(documents, tokens, per-sample lengths) of a shard; raises FormatError on any inconsistency."""
    docs = tokens = 0
    all_lengths = []
    for key, sample in iter_samples(path):
        toks, lengths = decode_sample(sample, dtype, where=f"{path.name}:{key}")
        ends = np.cumsum(lengths.astype(np.int64)) - 1
        if len(lengths) and (lengths.min() == 0 or not np.all(toks[ends] == eos_id)):
            raise FormatError(f"{path.name}:{key}: a document does not end with EOS {eos_id}")
        if len(toks) and int(toks.max()) >= vocab_size:
            raise FormatError(f"{path.name}:{key}: token id {int(toks.max())} >= vocab size {vocab_size}")
        docs, tokens = docs + len(lengths), tokens + len(toks)
        all_lengths.append(lengths)
    return docs, tokens, all_lengths


def check_shard(prep_dir: Path, manifest: dict, shard: dict) -> list[str]:
    """Problems of one shard against its manifest entry."""
    path = prep_dir / shard["name"]
    if not path.is_file():
        return [f"{shard['name']}: missing"]
    problems = []
    if path.stat().st_size != shard["bytes"]:
        problems.append(f"{shard['name']}: {path.stat().st_size} bytes, manifest says {shard['bytes']}")
    if file_sha256(path) != shard["sha256"]:
        problems.append(f"{shard['name']}: sha256 differs from the manifest")
    try:
        docs, tokens, _ = read_shard(path, manifest["dtype"], manifest["eos_id"], manifest["vocab_size"])
    except (FormatError, tarfile.TarError, OSError) as exc:
        return problems + [f"{shard['name']}: unreadable ({exc})"]
    if (docs, tokens) != (shard["documents"], shard["tokens"]):
        problems.append(f"{shard['name']}: {docs} documents / {tokens} tokens, manifest says "
                        f"{shard['documents']} / {shard['tokens']}")
    return problems


def _check_args(args: tuple) -> list[str]:
    return check_shard(*args)


def verify(prep_dir: str | Path, workers: int = 1) -> list[str]:
    """Problems found (empty = all good): each names the shard and what is wrong."""
    prep_dir = Path(prep_dir)
    manifest = read_manifest(prep_dir)
    jobs = [(prep_dir, manifest, shard) for shard in manifest["shards"]]
    if workers > 1 and len(jobs) > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(min(workers, len(jobs))) as pool:
            results = pool.map(_check_args, jobs, chunksize=1)
    else:
        results = [check_shard(*job) for job in jobs]
    problems = [p for shard_problems in results for p in shard_problems]
    listed = {s["name"] for s in manifest["shards"]}
    problems += [f"{p.name}: shard not in the manifest (left over from another run?)"
                 for p in sorted(prep_dir.glob("*.tar")) if p.name not in listed]
    return problems


def stats(prep_dir: str | Path) -> dict:
    """Tokens, documents, document-length percentiles and bytes per token, per split (from the shards)."""
    prep_dir = Path(prep_dir)
    manifest = read_manifest(prep_dir)
    out = {"tokenizer": manifest["tokenizer"], "vocab_size": manifest["vocab_size"], "dtype": manifest["dtype"],
           "utf8_bytes_per_token": manifest["totals"]["bytes_per_token"],
           "disk_bytes_per_token": manifest["totals"].get("disk_bytes_per_token"), "splits": {}}
    for split in sorted({s["split"] for s in manifest["shards"]}):
        lengths = []
        disk = 0
        for shard in manifest["shards"]:
            if shard["split"] == split:
                lengths += list(iter_lengths(prep_dir / shard["name"]))
                disk += shard["bytes"]
        lens = np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.uint32)
        pct = {f"p{q}": int(np.percentile(lens, q)) if len(lens) else 0 for q in (1, 10, 50, 90, 99)}
        utf8 = manifest["totals"]["splits"].get(split, {}).get("utf8_bytes", 0)
        out["splits"][split] = {"documents": int(len(lens)), "tokens": int(lens.sum()),
                                "max_length": int(lens.max()) if len(lens) else 0, **pct,
                                "utf8_bytes_per_token": round(utf8 / max(int(lens.sum()), 1), 4),
                                "disk_bytes_per_token": round(disk / max(int(lens.sum()), 1), 4)}
    return out
