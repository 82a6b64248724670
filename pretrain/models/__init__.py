"""Models behind one interface: `build_model(cfg.model)` for family "mixer" | "llama" | "gpt".

See `pretrain/models/common.py` for the interface and `pretrain/models/flops.py` for FLOPs,
parameter counts and memory (they need only the config)."""
from __future__ import annotations

from stackcore.config import ConfigError

FAMILIES = ("mixer", "llama", "gpt")


def build_model(cfg):
    """Builds a model from a `pretrain.config.ModelConfig` (or a RunConfig: its .model is used)."""
    cfg = getattr(cfg, "model", cfg)
    validate = getattr(cfg, "validate", None)
    if callable(validate):
        validate()
    if cfg.family == "mixer":
        from pretrain.models.mixer import MaskedMixer
        return MaskedMixer(cfg)
    if cfg.family == "llama":
        from pretrain.models.llama import Llama
        return Llama(cfg)
    if cfg.family == "gpt":
        from pretrain.models.gpt import GPT
        return GPT(cfg)
    raise ConfigError(f"model.family must be one of {list(FAMILIES)}, got {cfg.family!r}")


__all__ = ["build_model", "FAMILIES"]
