"""Models behind one interface: `build_model(cfg.model)` for any registered family (mixer, llama, gpt,
... see `pretrain/models/registry.py` and docs/extending.md).

See `pretrain/models/common.py` for the interface and `pretrain/models/flops.py` for FLOPs,
parameter counts and memory (they need only the config). Importing this package does not import torch."""
from __future__ import annotations

from collections.abc import Mapping

from pretrain.models.registry import family_names, get_family


def build_model(cfg):
    """Builds a model from a `pretrain.config.ModelConfig`, a RunConfig (its .model is used) or a
    plain mapping of the `[model]` section (`build_model({"family": "mixer", "d_model": 64})`, checked
    like the TOML: unknown keys and bad values raise ConfigError)."""
    if isinstance(cfg, Mapping):
        from pretrain.config import RunConfig
        from stackcore.config import from_dict
        cfg = from_dict(RunConfig, {"model": dict(cfg)}).model  # errors name the key as model.<key>
    cfg = getattr(cfg, "model", cfg)
    validate = getattr(cfg, "validate", None)
    if callable(validate):
        validate()
    if getattr(cfg, "bidirectional", False):  # a wrapper of two streams, each built from the family
        from pretrain.models.bidirectional import build_bidirectional
        return build_bidirectional(cfg)
    return get_family(cfg.family).model_class()(cfg)


__all__ = ["build_model", "family_names", "get_family"]
