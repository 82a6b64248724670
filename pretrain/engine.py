"""The DeepSpeed side: a config dict generated from the run TOML, AdamW with weight decay on matrices
only, the LR schedule, activation checkpointing per block, and `deepspeed.initialize`."""
from __future__ import annotations

import functools
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

from pretrain.schedule import lr_multiplier
from stackcore.config import ConfigError


def accumulation_steps(train_cfg, world: int) -> int:
    per_pass = train_cfg.micro_batch * world
    if train_cfg.global_batch % per_pass:
        raise ConfigError(f"train.global_batch={train_cfg.global_batch} must be a multiple of train.micro_batch "
                          f"({train_cfg.micro_batch}) x world size ({world}) = {per_pass}")
    return train_cfg.global_batch // per_pass


def ds_config(cfg, world: int) -> dict[str, Any]:
    t = cfg.train
    zero: dict[str, Any] = {"stage": cfg.deepspeed.zero_stage}
    if cfg.deepspeed.zero_stage == 3:
        # Gather whole parameters for export/eval without extra knobs; small models only prefetch less.
        zero["stage3_gather_16bit_weights_on_model_save"] = False
    return {
        "train_batch_size": t.global_batch,
        "train_micro_batch_size_per_gpu": t.micro_batch,
        "gradient_accumulation_steps": accumulation_steps(t, world),
        "gradient_clipping": t.grad_clip,
        "zero_optimization": zero,
        "bf16": {"enabled": t.precision == "bf16"},
        "steps_per_print": 10**12,
        "wall_clock_breakdown": False,
        "zero_allow_untested_optimizer": True,
    }


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices (and conv kernels) only; norms, biases and 1-d gains are not decayed."""
    decay, rest = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else rest).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]
    # A model with no 1-d parameters (Llama with model.norm = false: no gains, no biases) has an empty
    # group, which DeepSpeed drops while the LR scheduler still counts it.
    return [g for g in groups if g["params"]]


def enable_activation_checkpointing(model: torch.nn.Module) -> None:
    """Recompute each block in the backward pass (patched forward: state-dict keys stay unchanged)."""
    for block in model.blocks:
        block.forward = functools.partial(checkpoint, block.forward, use_reentrant=False)


def build_engine(model: torch.nn.Module, cfg, world: int, total_steps: int):
    import deepspeed

    t = cfg.train
    if t.activation_checkpointing:
        enable_activation_checkpointing(model)
    if t.precision == "bf16":
        # DeepSpeed casts only the parameters; float buffers (causal masks, RoPE tables) must follow, or
        # mixed-dtype matmuls fail. Its bf16 optimizer keeps the fp32 master weights.
        model.to(torch.bfloat16)
    optimizer = torch.optim.AdamW(param_groups(model, t.weight_decay), lr=t.lr, betas=tuple(t.betas),
                                  eps=1e-8, foreach=False)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(
        lr_multiplier, total=total_steps, warmup=t.warmup, schedule=t.schedule, min_ratio=t.min_lr_ratio,
        wsd_decay_fraction=t.wsd_decay_fraction))
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=schedule,
                                           config=ds_config(cfg, world), dist_init_required=False)
    if world == 1 and cfg.deepspeed.zero_stage == 0:
        # One rank: the gradient all-reduce is an identity that still flattens and copies every gradient.
        engine.enable_backward_allreduce = False
    if t.compile:
        engine.compile()
    return engine


def current_lr(engine) -> float:
    return float(engine.optimizer.param_groups[0]["lr"])


def set_lr(engine, lr: float) -> None:
    for group in engine.optimizer.param_groups:
        group["lr"] = lr
