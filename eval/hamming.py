"""The modified Hamming metric of input-representation accuracy (masked-mixers reference, section 4).

How much of its input does a model's hidden state still "know"? Embed real text (E), take the target
O(E) = output of the first k blocks (no final norm, no lm_head), start from x0 ~ N(0, 1) in embedding
space, and run plain gradient descent on the L1 distance |O(x) - O(E)| with the step size decaying
linearly from lr to lr/10. Decode each position's top-5 tokens from x through the pseudo-inverse of the
embedding matrix; h = fraction of non-pad positions whose true token is not among them.
h ~ 0: the blocks keep the input recoverable; h ~ 1 - 5/vocab: nothing of it is left (chance).

Only the shared model interface is used (`embed`, `forward_blocks`, `embedding`), so every family works.
Position embeddings (GPT) are handled without branching on the family: the positional offset
embed(ids) - embedding(ids) is removed before decoding.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

TOP_K = 5


@dataclass
class HammingResult:
    depth: int  # number of blocks the target was taken after
    per_sample: list[float]  # h of each sample
    final_l1: float  # mean |O(x) - O(E)| per element at the last step (how well the descent converged)

    @property
    def mean(self) -> float:
        return sum(self.per_sample) / len(self.per_sample)

    @property
    def std(self) -> float:
        m = self.mean
        n = len(self.per_sample)
        return (sum((h - m) ** 2 for h in self.per_sample) / (n - 1)) ** 0.5 if n > 1 else 0.0


def step_sizes(lr: float, steps: int) -> list[float]:
    """Linear decay from lr (first step) to lr/10 (last step)."""
    if steps == 1:
        return [lr]
    return [lr * (1.0 - 0.9 * t / (steps - 1)) for t in range(steps)]


def embedding_pinv(model: nn.Module) -> torch.Tensor:
    """pinv(W_emb) [d, V]: x [.., d] @ pinv -> token scores [.., V] (the least-squares one-hot)."""
    weight = model.embedding.weight.detach().float()
    return torch.linalg.pinv(weight)


def decode_topk(x: torch.Tensor, pinv: torch.Tensor, k: int = TOP_K) -> torch.Tensor:
    """Top-k token ids per position [.., k] of embedding-space vectors x [.., d]."""
    return (x.float() @ pinv).topk(k, dim=-1).indices


def miss_fraction(topk: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per sample: fraction of positions where mask is true whose true id is not in topk. [B]"""
    hit = (topk == ids.unsqueeze(-1)).any(-1)
    miss = (~hit & mask).float().sum(-1)
    return miss / mask.float().sum(-1).clamp_min(1.0)


def invert_blocks(model: nn.Module, ids: torch.Tensor, depth: int | None, steps: int, lr: float,
                  generator: torch.Generator, x0_std: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Gradient descent from noise towards an input whose block output matches the real one's.

    Returns (x [B, T, d] with the positional offset removed, E's token part, final mean L1)."""
    with torch.no_grad():
        embedded = model.embed(ids)
        token_part = model.embedding(ids)
        offset = embedded - token_part  # position embeddings (zero for families without them)
        target = model.forward_blocks(embedded, depth)
    x = x0_std * torch.randn(embedded.shape, generator=generator, dtype=embedded.dtype).to(embedded.device)
    x = (x + offset).requires_grad_(True)
    l1 = float("nan")
    for size in step_sizes(lr, steps):
        # Summed over elements so each coordinate's gradient is O(1) whatever the batch and shape;
        # samples do not interact (the model mixes only within a sequence).
        loss = (model.forward_blocks(x, depth) - target).abs().sum()
        (grad,) = torch.autograd.grad(loss, x)
        with torch.no_grad():
            x -= size * grad
        l1 = float(loss.detach()) / target.numel()
    return (x.detach() - offset), token_part, l1


def hamming(model: nn.Module, ids: torch.Tensor, depth: int | None = None, steps: int = 500,
            lr: float = 0.05, pad_mask: torch.Tensor | None = None, seed: int = 0,
            batch_size: int = 8, scale_to_embedding: bool = False) -> HammingResult:
    """h of `model` on the token windows `ids` [N, T] for the target taken after `depth` blocks (all
    when None). `pad_mask` [N, T] is true at real (non-pad) positions. Reproducible for a fixed seed.

    scale_to_embedding: start from N(0, s^2) and multiply the step sizes by s, s = std(W_emb), instead
    of the published N(0, 1) and lr. The published protocol favours models whose embeddings happen to
    be initialised at std ~1 (see docs/results/analysis.md); this variant removes that dependence."""
    if ids.dim() != 2:
        raise ValueError(f"ids must be [samples, seq], got shape {tuple(ids.shape)}")
    mask = torch.ones_like(ids, dtype=torch.bool) if pad_mask is None else pad_mask.bool()
    n_blocks = len(model.blocks)
    if depth is not None and not 0 <= depth <= n_blocks:
        raise ValueError(f"depth {depth} outside 0..{n_blocks} (the model has {n_blocks} blocks)")
    was_training = model.training
    model.eval()
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)  # gradients w.r.t. x only: half the backward cost
    try:
        pinv = embedding_pinv(model)
        device = model.embedding.weight.device
        scale = float(model.embedding.weight.detach().float().std()) if scale_to_embedding else 1.0
        generator = torch.Generator().manual_seed(seed)
        per_sample: list[float] = []
        l1s: list[float] = []
        for start in range(0, ids.size(0), batch_size):
            chunk = ids[start:start + batch_size].to(device)
            x, _, l1 = invert_blocks(model, chunk, depth, steps, lr * scale, generator, x0_std=scale)
            topk = decode_topk(x, pinv.to(device))
            per_sample += miss_fraction(topk, chunk, mask[start:start + batch_size].to(device)).tolist()
            l1s.append(l1)
    finally:
        for p in frozen:
            p.requires_grad_(True)
        model.train(was_training)
    return HammingResult(depth=n_blocks if depth is None else depth, per_sample=per_sample,
                         final_l1=sum(l1s) / len(l1s))


def hamming_by_depth(model: nn.Module, ids: torch.Tensor, depths: list[int], progress=None,
                     **kwargs) -> list[HammingResult]:
    """h for each depth (target after block k); `progress` wraps the depth iterator (e.g. tqdm)."""
    it = progress(depths) if progress else depths
    return [hamming(model, ids, depth=k, **kwargs) for k in it]
