"""The fixed validation set: the first `data.val_tokens` tokens of the val split in manifest order, so val
losses of different runs and architectures on one manifest are comparable; plus the val split's UTF-8
bytes per token, which turns a loss into bits per byte."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from webdataset.tariterators import tarfile_samples

from data_prep.format import decode_sample, shard_paths
from pretrain.data import pad_document


@dataclass
class ValidationSet:
    """The fixed validation sequences [N, 2, n_ctx] (inputs, aligned labels) and the val split's UTF-8
    bytes per token; indexing and slicing act on the sequences (what `Objective.evaluate` splits)."""
    sequences: torch.Tensor
    bytes_per_token: float | None
    token_bytes: torch.Tensor | None = None  # [vocab] UTF-8 bytes per token id (token_byte_lengths)

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, index):
        return self.sequences[index]


def token_byte_lengths(manifest: dict[str, Any], vocab_size: int) -> torch.Tensor | None:
    """UTF-8 bytes of every token id (special tokens: 0) of the manifest's tokenizer, so bits per byte
    count the bytes of exactly the tokens evaluated. None when the tokenizer file is not found locally or
    its ranks are not the manifest's: bpb then falls back to the split's mean bytes per token."""
    from data_prep.tokenizer import TokenizerError, load_tokenizer_file, ranks_sha256, tokenizer_dirs

    spec, name = manifest.get("tokenizer_spec") or "", manifest.get("tokenizer") or ""
    candidates = [Path(spec)] if spec.endswith(".tiktoken") else []
    candidates += [folder / f"{name}.tiktoken" for folder in tokenizer_dirs()] if name else []
    for path in candidates:  # local files only: no tokenizer download during a run
        try:
            enc = load_tokenizer_file(path) if path.is_file() else None
        except (TokenizerError, OSError):
            continue
        if enc is not None and ranks_sha256(enc) == manifest.get("ranks_sha256"):
            lengths = torch.zeros(max(vocab_size, enc.n_vocab), dtype=torch.int64)
            for token, rank in enc._mergeable_ranks.items():
                lengths[rank] = len(token)
            return lengths
    return None


def validation_set(cfg, manifest: dict[str, Any]) -> tuple[torch.Tensor, float | None] | None:
    """([N, 2, n_ctx] sequences from the first data.val_tokens tokens of the val split, in manifest
    order: the same for every run on this manifest, bytes per token of the val split) or None."""
    data, n = cfg.data, cfg.model.n_ctx
    paths = shard_paths(data.path, manifest, "val")
    if not paths:
        return None
    docs, total = [], 0
    for path in paths:
        for sample in tarfile_samples([{"url": str(path)}]):
            tokens, lengths = decode_sample(sample, manifest["dtype"])
            for doc in (np.split(tokens.astype(np.int64), np.cumsum(lengths)[:-1]) if len(lengths) else []):
                docs.append(doc[: data.val_tokens - total])
                total += len(docs[-1])
                if total >= data.val_tokens:
                    break
            if total >= data.val_tokens:
                break
        if total >= data.val_tokens:
            break
    if data.mode == "packed":
        flat = np.concatenate(docs)
        count = max(0, math.ceil((len(flat) - 1) / n))
        seqs = []
        for i in range(count):
            w = flat[i * n: i * n + n + 1]
            seqs.append(pad_document(w, n, "right", int(manifest["eos_id"])))
    else:
        seqs = [pad_document(d[: n + 1], n, data.pad_side, int(manifest["eos_id"])) for d in docs if len(d) >= 2]
    if not seqs:
        return None
    split = manifest["totals"].get("splits", {}).get("val", {})
    bpt = split["utf8_bytes"] / split["tokens"] if split.get("tokens") and split.get("utf8_bytes") else \
        manifest["totals"].get("bytes_per_token")
    return torch.as_tensor(np.stack(seqs)), bpt
