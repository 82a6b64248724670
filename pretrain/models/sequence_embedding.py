"""One embedding per text from any causal LM (the retrieval seam's shared piece; no family branches).

    ids = left_pad(token_lists, length=model.n_ctx, pad_id=eos, eos_id=eos)   # [B, length]
    emb = embed_sequences(model, ids, pooling="last")                         # [B, d], normalised

Every text is cut to its first `length - 1` tokens, ends with EOS and is LEFT padded to the fixed `length`
(never to the longest in the batch: the mixer's mixing weights are per position and the pads are read
by every model, so only a fixed length gives a text the same embedding in any batch). `pooling="last"` is
the paper's choice: the last-layer hidden state (after the final norm) at position -2, i.e. the last text
token before EOS; `"mean"` averages the non-pad positions. Embeddings are L2-normalised over the FEATURE
axis (dim -1): the original benchmark normalised transformer embeddings over the batch axis, which makes a
query's score depend on the other texts in its batch.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

POOLINGS = ("last", "mean")


def left_pad(texts: Sequence[Sequence[int]], length: int, pad_id: int, eos_id: int) -> torch.Tensor:
    """[B, length] int64: each text truncated to `length - 1` tokens, EOS appended, pads on the left."""
    if length < 2:
        raise ValueError(f"length must be >= 2 (a token and EOS), got {length}")
    out = torch.full((len(texts), length), pad_id, dtype=torch.long)
    for row, tokens in enumerate(texts):
        kept = list(tokens[: length - 1]) + [eos_id]
        out[row, length - len(kept):] = torch.as_tensor(kept, dtype=torch.long)
    return out


def text_mask(texts: Sequence[Sequence[int]], length: int) -> torch.Tensor:
    """[B, length] bool: True on the text (and its EOS), False on the left padding."""
    kept = torch.tensor([min(len(t), length - 1) + 1 for t in texts])
    return torch.arange(length).unsqueeze(0) >= (length - kept).unsqueeze(1)


def hidden_states(model, ids: torch.Tensor) -> torch.Tensor:
    """Last-layer hidden states [B, T, d] after the final norm: what the lm_head reads."""
    return model.final_norm(model.forward_blocks(model.embed(ids)))


def pool(hidden: torch.Tensor, pooling: str, mask: torch.Tensor | None = None) -> torch.Tensor:
    if pooling == "last":
        return hidden[:, -2]
    if pooling == "mean":
        if mask is None:
            raise ValueError("mean pooling needs the text mask (text_mask)")
        weights = mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * weights).sum(1) / weights.sum(1)
    raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")


def embed_sequences(model, ids: torch.Tensor, pooling: str = "last", mask: torch.Tensor | None = None,
                    normalize: bool = True) -> torch.Tensor:
    """[B, d] embeddings of left-padded `ids`; unit length over the feature axis when `normalize`."""
    emb = pool(hidden_states(model, ids), pooling, mask)
    return F.normalize(emb.float(), dim=-1) if normalize else emb


def embed_texts(model, texts: Sequence[Sequence[int]], eos_id: int, pooling: str = "last", batch: int = 32,
                length: int | None = None, normalize: bool = True) -> torch.Tensor:
    """Embeddings [N, d] of token lists, in batches, without gradients (evaluation)."""
    length = length or model.n_ctx
    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for start in range(0, len(texts), batch):
            chunk = texts[start:start + batch]
            ids = left_pad(chunk, length, eos_id, eos_id).to(device)
            mask = text_mask(chunk, length).to(device) if pooling == "mean" else None
            out.append(embed_sequences(model, ids, pooling, mask, normalize).cpu())
    return torch.cat(out) if out else torch.empty(0, model.cfg.d_model)


def cosine_scores(queries: torch.Tensor, candidates: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """[B, n] scores of queries [B, d] against their candidates [B, n, d] (both already normalised)."""
    return torch.einsum("bd,bnd->bn", queries, candidates) / temperature
