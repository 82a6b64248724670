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


def check_bidirectional(model_cfg) -> None:
    """Refuses, at config load (torch-free), a bidirectional config the two-stream form cannot build."""
    if not getattr(model_cfg, "bidirectional", False):
        return
    if model_cfg.family == "mixer" and getattr(model_cfg, "softmax", False):
        raise ConfigError("model.bidirectional = true with model.softmax = true: the reverse stream's last two "
                          "rows have no entry to normalise over; set model.softmax = false")
