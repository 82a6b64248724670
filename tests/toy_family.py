"""A model family in one file: the worked example of docs/extending.md ("Families"), registered by the
tests so the registry-driven interface, causality and FLOP-count tests run on it too.

The "running mean" family: each block adds a projection of the causal running mean of its input,
x_t + W (x_1 + ... + x_t) / t + b. Causal by construction, no positional encoding, no heads."""
from __future__ import annotations

import torch
from torch import nn

from pretrain.models.common import CausalLM
from pretrain.models.registry import CostModel, Family, register
from stackcore.config import ConfigError


class RunningMeanBlock(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        counts = torch.arange(1, x.size(1) + 1, device=x.device, dtype=x.dtype).unsqueeze(-1)
        return x + self.proj(x.cumsum(dim=1) / counts)


class RunningMean(CausalLM):
    def __init__(self, cfg):
        super().__init__(cfg)  # token embedding, lm_head (tied or not), loss: the shared interface
        self.blocks = nn.ModuleList(RunningMeanBlock(cfg) for _ in range(cfg.n_layers))


class RunningMeanCost(CostModel):
    def layer_flops(self, cfg, t: int) -> dict[str, float]:
        # the running mean is a cumsum, not a matmul: free under the FLOP convention
        return {"sequence": 0.0, "projections": 2 * cfg.d_model * cfg.d_model}

    def block_params(self, cfg) -> int:
        return cfg.d_model * cfg.d_model + cfg.d_model

    def final_params(self, cfg) -> int:
        return 0

    def layer_activation_values(self, cfg, t: int) -> float:
        return t * cfg.d_model + t  # the projection's input and the counts it was divided by


def check_running_mean(cfg) -> None:
    if cfg.heads != 1:
        raise ConfigError(f"model.heads = {cfg.heads}: family 'running_mean' has no heads; set model.heads = 1")


RUNNING_MEAN = register(Family("running_mean", model=RunningMean, cost=RunningMeanCost(),
                               check=check_running_mean, planner_heads=(1,),
                               description="causal running-mean mixing (toy)"))
