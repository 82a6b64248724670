"""The model-family registry: one record per family with its model class, its cost model (FLOPs,
parameters, saved activations) and the `[model]` options it implements.

    get_family("mixer").cost.layer_flops(cfg, t)      # torch-free: no model is built
    get_family("llama").model_class()(cfg)             # what build_model does
    family_names()                                     # what tests, `eval match` and plots iterate

Built-in families are listed in BUILTIN_FAMILIES (name -> "module:attribute" of their `Family`
record), imported on first lookup, so a cost query never imports torch or another family. A family
added later is one module plus one line in BUILTIN_FAMILIES; code that does not live in this package
(a notebook, a test) calls `register(family)` instead. See docs/extending.md.
"""
from __future__ import annotations

import abc
import dataclasses
import difflib
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from stackcore.config import ConfigError

# Adding a family: its module plus one line here.
BUILTIN_FAMILIES = {
    "mixer": "pretrain.models.mixer_family:MIXER",
    "llama": "pretrain.models.llama_family:LLAMA",
    "gpt": "pretrain.models.gpt_family:GPT",
}

# `[model]` keys every family implements; any other key is an option some family declares.
SHARED_OPTIONS = frozenset({"family", "d_model", "n_layers", "n_ctx", "vocab_size", "heads", "ffn_mult",
                            "tie_embeddings"})


class FamilyError(ValueError):
    """A family record that cannot be registered (a programming error, not bad user input)."""


class CostModel(abc.ABC):
    """What a family costs, from the `[model]` config alone (see pretrain/models/flops.py for the FLOP
    convention: matmul FLOPs only, 2 per multiply-add, dense mixing/attention, embeddings free).

    Subclasses implement the four abstract methods; the defaults describe the parts `CausalLM`
    provides to every family (token embedding, an optionally tied lm_head, the loss)."""

    @abc.abstractmethod
    def layer_flops(self, cfg, t: int) -> dict[str, float]:
        """Forward FLOPs per token of ONE block at sequence length t, by part. "sequence" must be the
        only t-dependent part (mixing or attention, counted densely); `useful=True` halves it."""

    def useful_sequence_flops(self, cfg, t: int) -> float:
        """The "sequence" part counted as the causal half of its dense count (`useful=True`). A family
        whose executed count is not the dense one (the mixer's blocked/FFT mixing) overrides this."""
        return 0.5 * self.layer_flops(cfg, t)["sequence"]

    @abc.abstractmethod
    def block_params(self, cfg) -> int:
        """Parameters of one block."""

    @abc.abstractmethod
    def final_params(self, cfg) -> int:
        """Parameters between the last block and the lm_head (a final norm), 0 if none."""

    @abc.abstractmethod
    def layer_activation_values(self, cfg, t: int) -> float:
        """Values one block saves for backward per sequence of length t (fp32 eager autograd)."""

    # The whole stack of blocks: n_layers identical blocks. A family whose blocks differ (the mixer's
    # attention hybrid) overrides these three instead of averaging a block (which would not be exact).
    def stack_flops(self, cfg, t: int, useful: bool = False) -> dict[str, float]:
        """Forward FLOPs per token of all blocks by part (`useful`: the causal half of "sequence")."""
        layer = self.layer_flops(cfg, t)
        if useful:
            layer["sequence"] = self.useful_sequence_flops(cfg, t)
        return {part: cfg.n_layers * flops for part, flops in layer.items()}

    def stack_params(self, cfg) -> int:
        return cfg.n_layers * self.block_params(cfg)

    def stack_activation_values(self, cfg, t: int) -> float:
        return cfg.n_layers * self.layer_activation_values(cfg, t)

    def lm_head_flops(self, cfg) -> float:
        return 2 * cfg.d_model * cfg.vocab_size

    def embedding_params(self, cfg) -> int:
        """Token embedding + untied lm_head (+ position embeddings, for families that have them)."""
        return cfg.vocab_size * cfg.d_model * (1 if cfg.tie_embeddings else 2)

    def head_activation_values(self, cfg, t: int) -> float:
        """Values saved outside the blocks: log-softmax of the logits, the lm_head input and the int64
        ids/labels. Families add their final norm or embedding-side tensors."""
        return t * cfg.vocab_size + t * cfg.d_model + 2 * t + 1


@dataclass(frozen=True)
class Family:
    """One model family. `model` is the CausalLM subclass (or any callable cfg -> model), or the
    string "module:Class", imported only when a model is built (keeps cost queries torch-free).
    `options`: the family-specific `[model]` keys it implements; a non-default value of an option
    that another family declares is refused for this one. `check(cfg)` adds family-specific
    validation and raises ConfigError."""

    name: str
    model: Any
    cost: CostModel
    options: frozenset[str] = frozenset()
    check: Callable[[Any], None] | None = None
    description: str = ""
    refusals: dict[str, str] = field(default_factory=dict)  # option -> why it is refused (the error's hint)
    planner_heads: tuple[int, ...] = ()  # heads `eval match` tries by default (empty: the reference's)

    def model_class(self) -> Callable:
        if not isinstance(self.model, str):
            return self.model
        module, _, attr = self.model.partition(":")
        return getattr(importlib.import_module(module), attr)

    def validate(self, cfg) -> None:
        """Refuses options this family does not implement, then runs its own check."""
        defaults = {f.name: f.default for f in dataclasses.fields(type(cfg))}
        for option in sorted(declared_options() - self.options):
            value = getattr(cfg, option, defaults.get(option))
            if isinstance(value, list):  # a tuple option read back from TOML (an export's config) is a list
                value = tuple(value)
            if option in defaults and value != defaults[option]:
                users = [n for n in family_names() if option in get_family(n).options]
                why = self.refusals.get(option, f"it is an option of {', '.join(users)}")
                raise ConfigError(f"model.{option} = {_toml(value)}: family '{self.name}' does not implement "
                                  f"it ({why}); remove the key or set it to {_toml(defaults[option])}")
        if self.check is not None:
            self.check(cfg)


def _toml(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else repr(value)


_REGISTERED: dict[str, Family] = {}


def register(family: Family, replace: bool = False) -> Family:
    """Adds a family; registering the same record twice is a no-op, a different one under a taken
    name needs replace=True. A family without a cost model is refused here, never estimated."""
    if not isinstance(family, Family):
        raise FamilyError(f"register() takes a Family record, got {type(family).__name__}")
    if not family.name or not family.name.isidentifier():
        raise FamilyError(f"family name must be a non-empty identifier, got {family.name!r}")
    if not isinstance(family.cost, CostModel):
        raise FamilyError(f"family '{family.name}' has no cost model: `cost` must be a "
                          f"pretrain.models.registry.CostModel (FLOPs, parameters, activations), "
                          f"got {type(family.cost).__name__}")
    _check_option_names(family)
    current = _REGISTERED.get(family.name)
    if current is not None and current is not family and not replace:
        raise FamilyError(f"family '{family.name}' is already registered; pass replace=True to override it")
    _REGISTERED[family.name] = family
    return family


def _check_option_names(family: Family) -> None:
    from pretrain.config import ModelConfig  # lazy: pretrain.config validates through this module

    known = {f.name for f in dataclasses.fields(ModelConfig)}
    for option in family.options | set(family.refusals):
        if option not in known or option in SHARED_OPTIONS:
            raise FamilyError(f"family '{family.name}': option {option!r} is not a family-specific "
                              f"ModelConfig field (add the field to pretrain.config.ModelConfig first)")


def unregister(name: str) -> None:
    """Removes a family registered with `register` (tests); built-ins come back on the next lookup."""
    _REGISTERED.pop(name, None)


def family_names() -> list[str]:
    """Every family: the built-ins in their listed order, then the ones registered at run time."""
    return list(dict.fromkeys([*BUILTIN_FAMILIES, *_REGISTERED]))


def get_family(name: str) -> Family:
    """The Family record; an unknown name raises ConfigError with the closest registered name."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name in BUILTIN_FAMILIES:
        module, _, attr = BUILTIN_FAMILIES[name].partition(":")
        return register(getattr(importlib.import_module(module), attr))
    names = family_names()
    match = difflib.get_close_matches(str(name), names, n=1, cutoff=0.5)
    hint = f"did you mean '{match[0]}'? " if match else ""
    raise ConfigError(f"model.family = {name!r} is not a registered family: {hint}registered: "
                      f"{', '.join(names)} (a new family registers in pretrain/models/registry.py, "
                      f"see docs/extending.md)")


def declared_options() -> frozenset[str]:
    """The family-specific options any registered family implements or explicitly refuses."""
    out: set[str] = set()
    for name in family_names():
        family = get_family(name)
        out |= family.options | set(family.refusals)
    return frozenset(out)
