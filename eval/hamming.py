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

h is only a property of the model when the descent got close to its target: every result carries the
L1 at the start and at the end (and their ratio) and whether the descent converged (`Convergence`: the
L1 stopped falling by more than `tol` over `window` steps). A row that did not converge says the
optimiser ran out of steps, not that the blocks lost the input; `Convergence(max_steps=...)` runs on
after the published schedule until it converges.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

TOP_K = 5


@dataclass
class Convergence:
    """When the descent counts as converged, and whether to run on until it is.

    Converged: over the last `window` steps the (window-averaged) L1 fell by less than `tol` of its
    current value AND less than `tol` of its total fall since the start -- the descent has stopped
    making progress at its step size. The first condition catches a long slow tail near the target,
    the second a slow but steady descent far from it (too small a step). The
    published protocol is a fixed schedule (`steps`, lr -> lr/10); max_steps > steps continues at the
    schedule's last step size (lr/10) until converged or max_steps, so its first `steps` steps are
    exactly the published descent."""
    window: int = 50
    tol: float = 0.01
    max_steps: int = 0  # 0: the fixed schedule only (the row is marked, not extended)

    def __post_init__(self) -> None:
        if self.window < 1 or not self.tol > 0:
            raise ValueError(f"convergence window must be >= 1 and tol > 0, got {self.window}, {self.tol}")


def l1_converged(trace: list[float], window: int, tol: float) -> bool:
    """Whether the mean of the last `window` L1 values is less than `tol` x min(that mean, the total
    fall from the start to it) below the mean of the `window` before them. A descent that never fell
    (zero gradient) is stationary, i.e. converged -- its L1 ratio of ~1 says where to. Fewer than
    2 x window values: not converged (nothing to judge by)."""
    if len(trace) < 2 * window:
        return False
    before = sum(trace[-2 * window:-window]) / window
    last = sum(trace[-window:]) / window
    total_fall = trace[0] - last
    return total_fall <= 0 or last <= 0 or (before - last) < tol * min(last, total_fall)


@dataclass
class HammingResult:
    depth: int  # number of blocks the target was taken after
    per_sample: list[float]  # h of each sample
    final_l1: float  # mean |O(x) - O(E)| per element after the last step (how close the descent got)
    start_l1: float = float("nan")  # the same at x0, before any step
    steps_run: int = 0  # descent steps (the largest over the batches)
    converged: bool = False  # every batch met the Convergence criterion at its last step
    # When the descent ran on past its schedule: h and the convergence mark at the end of the schedule
    # (the published protocol's row), so one descent shows whether running on changes h.
    schedule_per_sample: list[float] | None = None
    schedule_converged: bool | None = None

    @property
    def l1_ratio(self) -> float:
        """final / start L1: ~0 the target was reached; ~1 the descent did not move (e.g. zero gradient)."""
        return self.final_l1 / self.start_l1 if self.start_l1 > 0 else float("nan")

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


@dataclass
class Descent:
    """One batch's inversion: x (positional offset removed), E's token part and the L1 record."""
    x: torch.Tensor
    token_part: torch.Tensor
    start_l1: float
    final_l1: float
    steps: int
    converged: bool
    x_at_schedule: torch.Tensor | None = None  # x after the fixed schedule, when the descent ran on
    converged_at_schedule: bool | None = None


def invert_blocks(model: nn.Module, ids: torch.Tensor, depth: int | None, steps: int, lr: float,
                  generator: torch.Generator, x0_std: float = 1.0,
                  convergence: Convergence | None = None) -> Descent:
    """Gradient descent from noise towards an input whose block output matches the real one's: the
    fixed schedule of `steps`, then (convergence.max_steps > steps) on at its last step size until the
    L1 converged or max_steps. L1 = mean |O(x) - O(E)| per element."""
    conv = convergence or Convergence()
    with torch.no_grad():
        embedded = model.embed(ids)
        token_part = model.embedding(ids)
        offset = embedded - token_part  # position embeddings (zero for families without them)
        target = model.forward_blocks(embedded, depth)
    x = x0_std * torch.randn(embedded.shape, generator=generator, dtype=embedded.dtype).to(embedded.device)
    x = (x + offset).requires_grad_(True)
    sizes = step_sizes(lr, steps)
    trace: list[float] = []
    at_schedule = None
    while True:
        if len(trace) == steps and conv.max_steps > steps:
            at_schedule = x.detach() - offset  # the published protocol's end point

        # Summed over elements so each coordinate's gradient is O(1) whatever the batch and shape;
        # samples do not interact (the model mixes only within a sequence).
        loss = (model.forward_blocks(x, depth) - target).abs().sum()
        (grad,) = torch.autograd.grad(loss, x)
        trace.append(float(loss.detach()) / target.numel())
        with torch.no_grad():
            x -= sizes[min(len(trace), steps) - 1] * grad
        if len(trace) >= steps and (len(trace) >= conv.max_steps or l1_converged(trace, conv.window, conv.tol)):
            break
    if conv.max_steps > steps and at_schedule is None:  # converged right at the end of the schedule
        at_schedule = x.detach() - offset
    with torch.no_grad():
        final = float((model.forward_blocks(x, depth) - target).abs().mean())
    return Descent(x.detach() - offset, token_part, trace[0], final, len(trace),
                   l1_converged(trace, conv.window, conv.tol), at_schedule,
                   None if at_schedule is None else l1_converged(trace[:steps], conv.window, conv.tol))


def hamming(model: nn.Module, ids: torch.Tensor, depth: int | None = None, steps: int = 500,
            lr: float = 0.05, pad_mask: torch.Tensor | None = None, seed: int = 0,
            batch_size: int = 8, scale_to_embedding: bool = False,
            convergence: Convergence | None = None) -> HammingResult:
    """h of `model` on the token windows `ids` [N, T] for the target taken after `depth` blocks (all
    when None). `pad_mask` [N, T] is true at real (non-pad) positions. Reproducible for a fixed seed.
    The result carries the start and final L1 and whether every batch's descent converged: an h of a
    descent that did not converge measures the optimiser as much as the model.

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
        at_schedule: list[float] = []
        descents: list[Descent] = []
        for start in range(0, ids.size(0), batch_size):
            chunk = ids[start:start + batch_size].to(device)
            d = invert_blocks(model, chunk, depth, steps, lr * scale, generator, x0_std=scale,
                              convergence=convergence)
            chunk_mask = mask[start:start + batch_size].to(device)
            per_sample += miss_fraction(decode_topk(d.x, pinv.to(device)), chunk, chunk_mask).tolist()
            if d.x_at_schedule is not None:
                at_schedule += miss_fraction(decode_topk(d.x_at_schedule, pinv.to(device)), chunk, chunk_mask).tolist()
            descents.append(d)
    finally:
        for p in frozen:
            p.requires_grad_(True)
        model.train(was_training)
    return HammingResult(depth=n_blocks if depth is None else depth, per_sample=per_sample,
                         final_l1=sum(d.final_l1 for d in descents) / len(descents),
                         start_l1=sum(d.start_l1 for d in descents) / len(descents),
                         steps_run=max(d.steps for d in descents), converged=all(d.converged for d in descents),
                         schedule_per_sample=at_schedule or None,
                         schedule_converged=None if not at_schedule else all(d.converged_at_schedule
                                                                             for d in descents))


def hamming_by_depth(model: nn.Module, ids: torch.Tensor, depths: list[int], progress=None,
                     **kwargs) -> list[HammingResult]:
    """h for each depth (target after block k); `progress` wraps the depth iterator (e.g. tqdm)."""
    it = progress(depths) if progress else depths
    return [hamming(model, ids, depth=k, **kwargs) for k in it]
