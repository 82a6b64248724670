"""`[init]`: start a new run from another run's trained weights, optionally freezing a prefix of the model.

    --init.from PATH              an export (model.safetensors + config.toml, from pretrain.export), a run
                                  directory (its latest checkpoint) or a checkpoints/stepN directory of
                                  any ZeRO stage (consolidated on the CPU as pretrain.export does)
    --init.freeze_embedding true  the token (and position) embeddings do not train (a tied lm_head neither)
    --init.freeze_blocks N        blocks 0..N-1 do not train

Only the weights come over: optimizer, schedule, data position and step start fresh (a new run). When
the run resumes from its own checkpoint, that checkpoint wins and only the freezing is applied again.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pretrain.checkpoint import CheckpointError
from stackcore import rundir
from stackcore.config import ConfigError, from_dict


@dataclass
class InitOptions:
    source: str = ""  # the `from` key
    freeze_embedding: bool = False
    freeze_blocks: int = 0


def init_options(cfg) -> InitOptions:
    """The typed [init] table (`from` is a Python keyword, so it is read into `source`)."""
    table: dict[str, Any] = dict(cfg.init or {})
    if "source" in table:
        raise ConfigError("unknown key 'init.source': did you mean 'init.from'?")
    if "from" in table:
        table["source"] = table.pop("from")
    try:
        opts = from_dict(InitOptions, table)
    except ConfigError as exc:
        raise ConfigError(f"[init]: {str(exc).replace('source', 'from')}") from None
    n_layers = cfg.model.n_layers
    if not 0 <= opts.freeze_blocks <= n_layers:
        raise ConfigError(f"init.freeze_blocks={opts.freeze_blocks} must be in [0, model.n_layers={n_layers}]")
    return opts


def source_state_dict(source: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], str]:
    """(fp32 weights, the source's [model] table, a description) of an export, run dir or checkpoint."""
    from pretrain.export import WEIGHTS, _locate, consolidated_state_dict

    path = Path(source)
    if (path / WEIGHTS).is_file() and (path / rundir.CONFIG).is_file():
        from safetensors.torch import load_file
        return load_file(str(path / WEIGHTS)), rundir.read_config(path).get("model", {}), f"export {path}"
    if not path.exists():
        raise CheckpointError(f"init.from={source}: no such path; pass an export directory (model.safetensors "
                              "+ config.toml), a run directory or a checkpoints/stepN directory")
    run_dir, ckpt = _locate(path)
    source_cfg = rundir.read_config(run_dir)
    zero = int(source_cfg.get("deepspeed", {}).get("zero_stage", 0))
    return consolidated_state_dict(ckpt, zero), source_cfg.get("model", {}), f"checkpoint {ckpt}"


def load_weights(model: torch.nn.Module, source: str | Path, model_cfg) -> str:
    """Copies the source weights into `model` (every tensor, same shapes); returns what was loaded."""
    state, source_model, where = source_state_dict(source)
    own = model.state_dict()
    tied = {"lm_head.weight"} if getattr(model_cfg, "tie_embeddings", False) else set()
    missing = sorted(set(own) - set(state) - tied)
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        differs = {k: (v, getattr(model_cfg, k, None)) for k, v in source_model.items()
                   if getattr(model_cfg, k, v) != v}
        raise ConfigError(f"init.from={source}: its weights do not fit this run's model (missing {missing[:4]}, "
                          f"unexpected {unexpected[:4]}, other shapes {wrong[:4]}); [model] keys that differ "
                          f"(source, this run): {differs}; use the source's model shape")
    with torch.no_grad():
        for name, tensor in own.items():
            if name in state:
                tensor.copy_(state[name].to(tensor.dtype))
    return where


def freeze(model: torch.nn.Module, opts: InitOptions) -> list[str]:
    """Sets requires_grad False on the embeddings and/or the first blocks; returns the frozen names."""
    frozen = []
    if opts.freeze_embedding:
        modules = [model.embedding] + [m for n, m in model.named_children() if n.startswith("position")]
        for module in modules:
            for p in module.parameters():
                p.requires_grad_(False)
    for block in list(model.blocks)[:opts.freeze_blocks]:
        for p in block.parameters():
            p.requires_grad_(False)
    for name, p in model.named_parameters():
        if not p.requires_grad:
            frozen.append(name)
    return frozen


def apply_init(model: torch.nn.Module, cfg, load_weights_now: bool = True,
               targets: list[torch.nn.Module] | None = None) -> dict[str, Any]:
    """Applies [init] to a freshly built model, before the engine wraps it (the optimizer then leaves
    frozen parameters out): the source weights go into each of `targets` (default: the model itself; a
    wrapper objective names its causal-LM parts, see Objective.init_targets), which are frozen alike.
    Returns {source, frozen} for the record."""
    opts = init_options(cfg)
    targets = [model] if targets is None else targets
    where = None
    if opts.source and load_weights_now:
        for target in targets:
            where = load_weights(target, opts.source, cfg.model)
    for target in targets:
        freeze(target, opts)
    return {"source": where, "frozen": [n for n, p in model.named_parameters() if not p.requires_grad]}
