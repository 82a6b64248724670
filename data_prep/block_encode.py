"""Tokenizing a block of documents in one tiktoken call, equal token for token to `encode_ordinary` per
document with EOS appended.

    tokens, lengths = BlockEncoder(enc)(["first doc", "second doc"])   # uint32 ids, one length per doc

How: the documents are joined with `<|endoftext|>` after each one and encoded with that special token
allowed. tiktoken's `encode` cuts the text at every allowed special token and runs its regex split and BPE
on each piece alone, exactly what `encode_ordinary` does with a whole document, so

    encode(d1 + EOT + d2 + EOT, allowed={EOT}) == encode_ordinary(d1) + [eos] + encode_ordinary(d2) + [eos]

provided that
  (1) no document contains the text `<|endoftext|>` itself: checked per block, because then the output
      holds more EOS ids than documents (no ordinary token has the EOS id; checked once per tokenizer);
  (2) no special token can match across a joint and hide a separator: every special token has the form
      `<|name|>` with no `<`, `|` or `>` inside the name (checked once per tokenizer).
A block that fails (1), or a tokenizer that fails (2), is encoded per document with `encode_ordinary`.
A block of long documents (mean >= LONG_DOCUMENT_CHARS) is encoded one `encode_to_numpy` call per document
instead: the per-call cost no longer matters there, and joining would copy and widen the whole block.

Why: per document, a Python call plus a Python int per token (the list) cost more than the BPE itself on
short documents; `encode_to_numpy` hands back the ids as one uint32 buffer. One thread, like the baseline.
"""
from __future__ import annotations

import functools
import re

import numpy as np
import tiktoken

from data_prep.tokenizer import EOS_TEXT, eos_id

_SPECIAL_FORM = re.compile(r"<\|[^<|>]*\|>")
# Above this mean length a block is encoded one call per document: the per-call cost is then negligible,
# while joining copies the whole block (and widens every document to the widest character's width).
LONG_DOCUMENT_CHARS = 2000


@functools.lru_cache(maxsize=8)
def joinable(enc: tiktoken.Encoding) -> bool:
    """Whether documents joined by EOS encode exactly like separate documents (conditions in the module doc)."""
    eos = eos_id(enc)
    specials_ok = all(_SPECIAL_FORM.fullmatch(name) for name in enc._special_tokens)
    return specials_ok and eos not in set(enc._mergeable_ranks.values())


class BlockEncoder:
    """Callable: texts -> (uint32 tokens, uint32 lengths), every document ending with EOS."""

    def __init__(self, enc: tiktoken.Encoding):
        self.enc, self.eos, self.joinable = enc, eos_id(enc), joinable(enc)
        self.allowed = frozenset({EOS_TEXT})

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        if not texts:
            return np.empty(0, np.uint32), np.empty(0, np.uint32)
        if sum(map(len, texts)) >= LONG_DOCUMENT_CHARS * len(texts):
            return self.per_long_document(texts)
        if self.joinable:
            joined = EOS_TEXT.join(texts) + EOS_TEXT
            tokens = self.enc.encode_to_numpy(joined, allowed_special=self.allowed, disallowed_special=())
            ends = np.flatnonzero(tokens == self.eos) + 1
            if len(ends) == len(texts):  # else a document holds the EOS text itself: condition (1) fails
                return tokens, np.diff(ends, prepend=0).astype(np.uint32)
        return self.per_document(texts)

    def per_long_document(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """One `encode_to_numpy` call per document with no special token allowed: tiktoken's `encode` with
        an empty allowed set runs over the whole text exactly like `encode_ordinary`, and returns a
        buffer instead of a list of Python ints."""
        encode, none = self.enc.encode_to_numpy, frozenset()
        arrays = [encode(text, allowed_special=none, disallowed_special=()) for text in texts]
        eos = np.array([self.eos], dtype=np.uint32)
        lengths = np.fromiter(map(len, arrays), dtype=np.uint32, count=len(arrays)) + 1
        return np.concatenate([piece for array in arrays for piece in (array, eos)]), lengths

    def per_document(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """The reference path: `encode_ordinary` per document, EOS appended."""
        encode, eos = self.enc.encode_ordinary, self.eos
        docs = [encode(text) + [eos] for text in texts]
        lengths = np.fromiter(map(len, docs), dtype=np.uint32, count=len(docs))
        tokens = np.fromiter((t for doc in docs for t in doc), dtype=np.uint32, count=int(lengths.sum()))
        return tokens, lengths
