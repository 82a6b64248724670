"""The shard and manifest format: the one contract between data_prep (writer) and pretrain (reader).

A prep directory holds `manifest.json` and plain tar shards named `{split}-{task:05d}-{seq:05d}.tar`.
Each tar member group (a webdataset sample, key `{task:05d}-{seq:05d}-{index:06d}`) holds whole documents:

    {key}.tokens.zst   zstd-compressed little-endian token array (uint16 if the vocabulary fits, else uint32);
                       every document ends with EOS
    {key}.lengths.zst  zstd-compressed little-endian uint32 array: one length per document (EOS included)

so the loader can pack to any n_ctx, or cut per document, without re-tokenizing. numpy + zstandard only:
no torch here (prep nodes must start fast).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import zstandard

from stackcore.atomic import FILE_MODE, atomic_write_bytes, atomic_write_json  # noqa: F401 (re-exported)
from stackcore.errors import UserError

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
TOKENS_EXT = "tokens.zst"
LENGTHS_EXT = "lengths.zst"
ZSTD_LEVEL = 3


class FormatError(UserError, ValueError):
    """A shard or manifest that does not follow this format; the message names the file and the fix."""


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype("<u2") if vocab_size <= 65536 else np.dtype("<u4")


def shard_name(split: str, task: int, seq: int) -> str:
    return f"{split}-{task:05d}-{seq:05d}.tar"


def sample_key(task: int, seq: int, index: int) -> str:
    return f"{task:05d}-{seq:05d}-{index:06d}"


def encode_sample(tokens: np.ndarray, lengths: np.ndarray, dtype: np.dtype) -> dict[str, bytes]:
    """The member payloads of one sample (without the key)."""
    if int(lengths.sum()) != len(tokens):
        raise FormatError(f"lengths sum {int(lengths.sum())} != {len(tokens)} tokens")
    cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    return {
        TOKENS_EXT: cctx.compress(np.ascontiguousarray(tokens, dtype=dtype).tobytes()),
        LENGTHS_EXT: cctx.compress(np.ascontiguousarray(lengths, dtype="<u4").tobytes()),
    }


def decode_sample(sample: dict[str, Any], dtype: np.dtype | str, where: str = "") -> tuple[np.ndarray, np.ndarray]:
    """(tokens, lengths) of one webdataset sample dict (as yielded by `webdataset.WebDataset`)."""
    where = where or str(sample.get("__url__", "?")) + ":" + str(sample.get("__key__", "?"))
    try:
        dctx = zstandard.ZstdDecompressor()
        tokens = np.frombuffer(dctx.decompress(sample[TOKENS_EXT]), dtype=np.dtype(dtype))
        lengths = np.frombuffer(dctx.decompress(sample[LENGTHS_EXT]), dtype="<u4")
    except KeyError as exc:
        raise FormatError(f"{where}: sample lacks member {exc}; re-run data_prep on this shard") from None
    except zstandard.ZstdError as exc:
        raise FormatError(f"{where}: corrupt zstd data ({exc}); re-run data_prep (with --resume) "
                          "after deleting this shard and its task's .done marker") from None
    if int(lengths.sum()) != len(tokens):
        raise FormatError(f"{where}: document lengths sum to {int(lengths.sum())} but the sample holds "
                          f"{len(tokens)} tokens; the shard is corrupt, re-run data_prep")
    return tokens, lengths


def split_documents(tokens: np.ndarray, lengths: np.ndarray) -> list[np.ndarray]:
    return np.split(tokens, np.cumsum(lengths)[:-1]) if len(lengths) else []


REQUIRED_MANIFEST_KEYS = ("version", "tokenizer", "vocab_size", "eos_id", "ranks_sha256", "dtype", "shards", "totals")


def read_manifest(prep_dir: str | Path) -> dict[str, Any]:
    """The manifest of a prep directory, checked for the keys every reader relies on.

    Schema (version 1): tokenizer (name), tokenizer_spec (as given to --tokenizer), vocab_size, eos_id,
    ranks_sha256, dtype ("uint16"|"uint32"), options (the prep options that shape the shards), tasks (count),
    shards: [{name, split, task, seq, documents, tokens, samples, bytes, sha256}] (train then val, by task
    and seq), inputs: [{path, read, written, skipped: {reason: n}, txt_rule?, error?}] (read = written +
    skipped), totals: {documents, tokens, utf8_bytes, bytes_per_token (UTF-8 bytes/token, for bits per
    byte), disk_bytes, disk_bytes_per_token, read, skipped, splits: {split: {documents, tokens, utf8_bytes,
    shards}}}, fingerprint (sha256 over the shard names and hashes), timings (the only run-dependent part).
    The split of a document: "val" iff blake2b-64(UTF-8 text, little-endian) < val_fraction * 2**64.
    """
    path = Path(prep_dir) / MANIFEST_NAME
    if not path.is_file():
        raise FormatError(f"{path}: no manifest; run `python -m data_prep tokenize ... --out {prep_dir}` "
                          f"(or `python -m data_prep finalize {prep_dir}` after a Slurm array)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise FormatError(f"{path}: not valid JSON ({exc}); re-run `python -m data_prep finalize {prep_dir}`") from None
    missing = [k for k in REQUIRED_MANIFEST_KEYS if k not in manifest]
    if missing:
        raise FormatError(f"{path}: manifest lacks {missing}; re-run data_prep finalize")
    if manifest["version"] != MANIFEST_VERSION:
        raise FormatError(f"{path}: manifest version {manifest['version']}, this code reads {MANIFEST_VERSION}; "
                          "re-prep the data or use a matching checkout")
    return manifest


def shard_repair_hint(path: str | Path, task: int) -> str:
    """How to rebuild one shard: the steps `data_prep verify` asks for, spelled out for this shard."""
    prep_dir = Path(path).parent
    return (f"check the whole prep with `python -m data_prep verify {prep_dir}`, then delete {Path(path).name} "
            f"and its task's marker {prep_dir / 'tasks' / f'{task:05d}.json'} and re-run its task with "
            f"`python -m data_prep tokenize ... --out {prep_dir} --resume`")


def check_shard_file(path: str | Path, expected_bytes: int | None, task: int) -> Path:
    """`path`, refused when it is missing or its size differs from the manifest's record (None: a
    hand-written manifest without sizes, only presence is checked). A stat only:
    cheap enough for every run start and every shard open (the sha256 is `data_prep verify`'s job).
    Why: a truncated tar reads fine up to the cut, so a loader would train on its head and die late."""
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"{path}: shard listed in the manifest is missing; restore it, or "
                          + shard_repair_hint(path, task))
    size = path.stat().st_size
    if expected_bytes is not None and size != expected_bytes:
        raise FormatError(f"{path}: {size} bytes but the manifest records {expected_bytes}: the shard is "
                          "truncated or damaged (disk trouble, a partial copy); " + shard_repair_hint(path, task))
    return path


def check_shard_sizes(prep_dir: str | Path, manifest: dict[str, Any]) -> None:
    """Every shard of the manifest present with its recorded size (see check_shard_file)."""
    for shard in manifest["shards"]:
        check_shard_file(Path(prep_dir) / shard["name"], shard.get("bytes"), int(shard.get("task", 0)))


def shard_paths(prep_dir: str | Path, manifest: dict[str, Any], split: str) -> list[Path]:
    """The shards of one split in manifest (deterministic) order; a missing or resized file is an error."""
    return [check_shard_file(Path(prep_dir) / shard["name"], shard.get("bytes"), int(shard.get("task", 0)))
            for shard in manifest["shards"] if shard["split"] == split]
