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
        if self.joinable:
            joined = EOS_TEXT.join(texts) + EOS_TEXT
            tokens = self.enc.encode_to_numpy(joined, allowed_special=self.allowed, disallowed_special=())
            ends = np.flatnonzero(tokens == self.eos) + 1
            if len(ends) == len(texts):  # else a document holds the EOS text itself: condition (1) fails
                return tokens, np.diff(ends, prepend=0).astype(np.uint32)
        return self.per_document(texts)

    def per_document(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """The reference path: `encode_ordinary` per document, EOS appended."""
        encode, eos = self.enc.encode_ordinary, self.eos
        docs = [encode(text) + [eos] for text in texts]
        lengths = np.fromiter(map(len, docs), dtype=np.uint32, count=len(docs))
        tokens = np.fromiter((t for doc in docs for t in doc), dtype=np.uint32, count=int(lengths.sum()))
        return tokens, lengths
