"""Objectives by name: `[objective] name = "next_token"` (the default) plus the objective's own keys.

A module `pretrain/objectives/<name>.py` that defines `@register class X(Objective): name = "<name>"` is
found by its name alone (imported on first use), so adding an objective is adding one file."""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from stackcore.config import ConfigError, from_dict

DEFAULT = "next_token"
OBJECTIVES: dict[str, type] = {}


def register(cls: type) -> type:
    """Class decorator: makes `cls` (an Objective subclass with a `name`) buildable by that name."""
    if not getattr(cls, "name", ""):
        raise TypeError(f"{cls.__name__}: an objective needs a non-empty class attribute `name`")
    OBJECTIVES[cls.name] = cls
    return cls


def available() -> list[str]:
    """Registered names plus the modules of this package that are not imported yet."""
    modules = {m.name for m in pkgutil.iter_modules(__path__) if m.name not in ("base",)}
    return sorted(set(OBJECTIVES) | modules)


def objective_class(name: str) -> type:
    if name not in OBJECTIVES and name in available():
        importlib.import_module(f"{__name__}.{name}")  # its @register line fills OBJECTIVES
    if name not in OBJECTIVES:
        raise ConfigError(f"objective.name={name!r} is not a known objective; known: {available()} "
                          "(add one as pretrain/objectives/<name>.py, see docs/extending.md)")
    return OBJECTIVES[name]


def build_objective(cfg):
    """The run's objective from `cfg.objective` (a table: name + the objective's own typed keys),
    checked against the run's data and model."""
    table: dict[str, Any] = dict(cfg.objective or {})
    name = table.pop("name", DEFAULT)
    cls = objective_class(name)
    try:
        options = from_dict(cls.Options, table)
    except ConfigError as exc:
        raise ConfigError(f"[objective] of {name!r}: {exc} (keys of {name!r} are set as "
                          f"--objective.KEY VALUE)") from None
    objective = cls(options, cfg)
    objective.check()
    return objective


__all__ = ["DEFAULT", "OBJECTIVES", "available", "build_objective", "objective_class", "register"]
