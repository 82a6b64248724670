"""Building the family models a wrapper (encoder-decoder, bidirectional streams, multi-token heads) is
made of: through the registry, so any registered family works, and checked for the parts a wrapper
calls, so a family that lacks them fails at start naming what is missing instead of mid-step."""
from __future__ import annotations

import dataclasses

from stackcore.config import ConfigError

NEEDED = ("embed", "forward_blocks", "final_norm", "lm_head", "blocks")


def family_model(model_cfg, purpose: str, **fields):
    """build_model(model_cfg with `fields` replaced, never bidirectional), refused with a ConfigError
    when the family model lacks the CausalLM parts that `purpose` (e.g. "objective 'autoencoder'") uses."""
    from pretrain.models import build_model

    if getattr(model_cfg, "bidirectional", False):
        fields.setdefault("bidirectional", False)
    model = build_model(dataclasses.replace(model_cfg, **fields) if fields else model_cfg)
    missing = [name for name in NEEDED if not hasattr(model, name)]
    if missing:
        raise ConfigError(f"model.family = {model_cfg.family!r} does not support {purpose}: its model has no "
                          f"{', '.join(missing)} (the pretrain.models.common.CausalLM interface); subclass "
                          "CausalLM in the family's module or choose another model.family")
    return model


# Mixer options whose mixing assumes the causal (lower-triangular) layout: the reverse stream's
# triu(diagonal=2) re-mask would break them (an empty row to normalise, a per-distance weight, an
# attention layer with no mask to swap), so a bidirectional mixer refuses them by name.
CAUSAL_ONLY_MIXER_OPTIONS = ("softmax", "mixing", "mixing_init", "row_sum_one", "distance_decay", "mixing_gate",
                             "attention_layers")


def check_bidirectional(model_cfg) -> None:
    """Refuses, at config load (torch-free), a bidirectional config the two-stream form cannot build."""
    if not getattr(model_cfg, "bidirectional", False) or model_cfg.family != "mixer":
        return
    defaults = {f.name: f.default for f in dataclasses.fields(type(model_cfg))}
    for key in CAUSAL_ONLY_MIXER_OPTIONS:
        if key in defaults and getattr(model_cfg, key) != defaults[key]:
            raise ConfigError(f"model.bidirectional = true with model.{key} = {_toml(getattr(model_cfg, key))}: "
                              "the reverse stream re-masks the mixing matrices (triu, diagonal 2), which that "
                              f"option's mixing cannot take; set model.{key} = {_toml(defaults[key])} or "
                              "model.bidirectional = false")


def _toml(value) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else repr(value)
