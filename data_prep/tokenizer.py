"""Tokenizers: tiktoken encodings by name, or a local `.tiktoken` ranks file parsed here (offline).

    enc = load_tokenizer("gpt2")                      # tiktoken download/cache; offline falls back to a
                                                      # local r50k_base.tiktoken (see TOKENIZER_DIRS)
    enc = load_tokenizer("path/to/r50k_base.tiktoken")  # pattern + specials from the known-hash table
    enc = load_tokenizer("my8k.tiktoken")             # pattern + specials from my8k.tiktoken.json

A `.tiktoken` file is `base64(token bytes) rank` per line. Its metadata (regex pattern, special tokens)
lives beside it in `<file>.json` ({"name", "pat_str", "special_tokens"}), written by `train-tokenizer`.
The four published OpenAI files need no sidecar: they are recognised by their sha256 (the hashes tiktoken
pins) and get their pattern from tiktoken's own constructors. The result is a real `tiktoken.Encoding`.
"""
from __future__ import annotations

import binascii
import functools
import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

import tiktoken

from stackcore.errors import UserError
from stackcore.paths import shared_root

EOS_TEXT = "<|endoftext|>"
KNOWN_NAMES = ("gpt2", "r50k_base", "p50k_base", "cl100k_base", "o200k_base")
# sha256 of the published ranks files (from tiktoken_ext.openai_public) -> encoding name
KNOWN_RANK_HASHES = {
    "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930": "r50k_base",
    "94b5ca7dff4d00767bc256fdd1b27e5b17361d7b8a5f968547f9f23eb70d2069": "p50k_base",
    "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7": "cl100k_base",
    "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d": "o200k_base",
}
_PATCH_LOCK = threading.Lock()


class TokenizerError(UserError, ValueError):
    """A tokenizer that cannot be loaded; the message names the file or name and the fix."""


def tokenizer_dirs() -> list[Path]:
    """Where a tokenizer *name* is looked up as `<name>.tiktoken` when tiktoken cannot download it:
    $MIXERSTACK_TOKENIZERS (os.pathsep-separated), then the shared data folder (stackcore.paths)."""
    dirs = [Path(p) for p in os.environ.get("MIXERSTACK_TOKENIZERS", "").split(os.pathsep) if p]
    dirs.append(shared_root() / "data" / "tokenizers")  # $MIXERSTACK_SHARED or the folder beside the repo
    return dirs


def parse_ranks(path: str | Path) -> tuple[dict[bytes, int], str]:
    """(mergeable ranks, sha256 of the file) of a `.tiktoken` file; errors name the line."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TokenizerError(f"{path}: cannot read tokenizer file ({exc.strerror})") from None
    ranks: dict[bytes, int] = {}
    decode = binascii.a2b_base64
    for lineno, line in enumerate(data.splitlines(), 1):
        if not line:
            continue
        try:
            token, rank = line.split()
            ranks[decode(token, strict_mode=True)] = int(rank)
        except (ValueError, binascii.Error):
            raise TokenizerError(f"{path}:{lineno}: not a `base64token rank` line ({line[:60]!r}); "
                                 "is this a .tiktoken ranks file?") from None
    if not ranks:
        raise TokenizerError(f"{path}: empty ranks file")
    return ranks, hashlib.sha256(data).hexdigest()


def ranks_bytes(ranks: dict[bytes, int]) -> bytes:
    """The canonical `.tiktoken` serialisation (sorted by rank); equals the published files byte for byte."""
    encode = binascii.b2a_base64
    return b"".join(encode(tok, newline=False) + b" %d\n" % rank
                    for tok, rank in sorted(ranks.items(), key=lambda kv: kv[1]))


_SHA_CACHE: dict[int, tuple[tiktoken.Encoding, str]] = {}


def ranks_sha256(enc: tiktoken.Encoding) -> str:
    """sha256 of the encoding's ranks in canonical file form (the manifest pins it); cached per object."""
    cached = _SHA_CACHE.get(id(enc))
    if cached is None or cached[0] is not enc:
        cached = _SHA_CACHE[id(enc)] = (enc, hashlib.sha256(ranks_bytes(enc._mergeable_ranks)).hexdigest())
    return cached[1]


def _openai_constructor_args(name: str, ranks: dict[bytes, int]) -> dict[str, Any]:
    """tiktoken's own constructor for `name`, fed local ranks instead of a download (no copied patterns)."""
    from tiktoken_ext import openai_public

    ctor = openai_public.ENCODING_CONSTRUCTORS["r50k_base" if name == "gpt2" else name]
    with _PATCH_LOCK:
        original = openai_public.load_tiktoken_bpe
        openai_public.load_tiktoken_bpe = lambda *_a, **_k: ranks
        try:
            args = ctor()
        finally:
            openai_public.load_tiktoken_bpe = original
    return args


def metadata_path(ranks_path: str | Path) -> Path:
    return Path(str(ranks_path) + ".json")


def load_tokenizer_file(path: str | Path) -> tiktoken.Encoding:
    path = Path(path).resolve()
    meta = metadata_path(path)
    stamp = tuple((p.stat().st_mtime_ns, p.stat().st_size) if p.is_file() else None for p in (path, meta))
    return _load_tokenizer_file(path, stamp)


@functools.lru_cache(maxsize=8)
def _load_tokenizer_file(path: Path, _stamp: tuple) -> tiktoken.Encoding:
    """Cached on (path, mtime, size) of the ranks and metadata files: planning and tasks share one load."""
    ranks, digest = parse_ranks(path)
    meta_file = metadata_path(path)
    if meta_file.is_file():
        try:
            meta = json.loads(meta_file.read_text())
            return tiktoken.Encoding(name=meta.get("name", path.stem), pat_str=meta["pat_str"],
                                     mergeable_ranks=ranks, special_tokens=meta["special_tokens"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise TokenizerError(f"{meta_file}: bad tokenizer metadata ({exc!r}); it needs "
                                 '{"name", "pat_str", "special_tokens"}') from None
    known = KNOWN_RANK_HASHES.get(digest)
    if known is None:
        raise TokenizerError(f"{path}: unknown ranks (sha256 {digest[:12]}...) and no metadata file "
                             f"{meta_file.name} beside it; write one with the regex pattern and special tokens "
                             '({"name", "pat_str", "special_tokens"}), as `train-tokenizer` does')
    return tiktoken.Encoding(**_openai_constructor_args(known, ranks))


def _looks_like_path(name: str) -> bool:
    return name.endswith(".tiktoken") or os.sep in name or Path(name).is_file()


def load_tokenizer(name_or_file: str | Path) -> tiktoken.Encoding:
    """A tiktoken Encoding from an encoding name or a `.tiktoken` file path; see the module doc."""
    spec = str(name_or_file)
    if _looks_like_path(spec):
        if not Path(spec).is_file():
            raise TokenizerError(f"tokenizer file not found: {spec}")
        return load_tokenizer_file(spec)
    if spec not in KNOWN_NAMES:
        raise TokenizerError(f"unknown tokenizer {spec!r}: use one of {', '.join(KNOWN_NAMES)} or a "
                             ".tiktoken file path")
    local_name = "r50k_base" if spec == "gpt2" else spec
    for folder in tokenizer_dirs():
        candidate = folder / f"{local_name}.tiktoken"
        if candidate.is_file():  # prefer the local copy: same ranks (hash-checked), no network, no cache dir
            enc = load_tokenizer_file(candidate)
            if enc.name != local_name:
                continue
            return tiktoken.Encoding(name=spec, pat_str=enc._pat_str, mergeable_ranks=enc._mergeable_ranks,
                                     special_tokens=enc._special_tokens)
    try:
        return tiktoken.get_encoding(spec)
    except Exception as exc:  # offline, or a read-only cache folder
        raise TokenizerError(
            f"tokenizer {spec!r}: tiktoken could not fetch it ({type(exc).__name__}: {exc}) and no local "
            f"{local_name}.tiktoken was found in {[str(d) for d in tokenizer_dirs()]}; put the file in one of "
            "those folders, set MIXERSTACK_TOKENIZERS, or pass the file path") from None


def eos_id(enc: tiktoken.Encoding) -> int:
    """The end-of-document id: `<|endoftext|>`; every document ends with it."""
    if EOS_TEXT not in enc._special_tokens:
        raise TokenizerError(f"tokenizer {enc.name!r} has no {EOS_TEXT} special token; add it to its metadata")
    return enc._special_tokens[EOS_TEXT]


def describe(spec: str, enc: tiktoken.Encoding) -> dict[str, Any]:
    """The tokenizer fields of a manifest."""
    return {"tokenizer": enc.name, "tokenizer_spec": str(spec), "vocab_size": enc.n_vocab,
            "eos_id": eos_id(enc), "ranks_sha256": ranks_sha256(enc)}
