"""Sweep grids: one TOML file -> a list of named training runs (name, trainer argv).

    [sweep]
    name = "ctx-pairs"
    base = "../runs/tiny.toml"        # the run config every run starts from (relative to this file)
    dir = "runs/sweeps/ctx-pairs"     # the sweep directory; becomes run.dir of every run (relative to cwd)
    run_name = "{variant}-ctx{model.n_ctx}-s{run.seed}"   # fields: variant + any axis key
    max_parallel = 4                  # array tasks running at once (python -m slurm sweep)

    [overrides]                       # applied to every run (dotted config keys)
    "train.steps" = 200

    [axes]                            # cartesian product, in file order (the last axis varies fastest)
    "model.n_ctx" = [32, 128, 512]
    "run.seed" = [0, 1]

    [variants.mixer]                  # named override sets crossed with the axes; `config` merges a
    config = "../models/mixer-tiny.toml"   # TOML file (e.g. a model config) first, keys then override it
    [variants.llama]
    config = "../models/llama-tiny.toml"

    [match]                           # optional: pair the variants at matched FLOPs per token
    reference = "llama"               # this variant's shape is fixed; every other variant gets the
    by = "flops"                      # d_model/n_layers/heads eval.match.plan finds closest to it at
    heads = [1]                       # the same grid point (n_ctx!); by = flops|params|memory

Precedence (later wins): base file < [overrides] < variant (config file, then its keys) < axes <
matching < the run's name and dir. Every run is then `python -m pretrain.train --config BASE <argv>`,
locally (`sweeps.local.run_local`) or as one Slurm array element (`sweeps.slurm_array`); both behind
`python -m slurm sweep` (= `python -m sweeps`).
"""
from __future__ import annotations

import itertools
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stackcore import rundir
from stackcore.config import ConfigError, _toml_value, read_toml

SWEEP_FILE = rundir.SWEEP_FILE  # written in the sweep directory when the sweep is submitted


@dataclass
class Grid:
    path: Path
    name: str
    base: Path
    dir: Path
    run_name: str
    max_parallel: int
    overrides: dict[str, Any] = field(default_factory=dict)
    axes: dict[str, list[Any]] = field(default_factory=dict)
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    match: dict[str, Any] = field(default_factory=dict)


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"model": {"d_model": 64}} -> {"model.d_model": 64}; dotted keys pass through."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            out.update(_flatten(value, path))
        else:
            out[path] = value
    return out


def load_grid(grid_path: str | Path) -> Grid:
    path = Path(grid_path)
    table = read_toml(path)
    where = f"{path}"
    known = {"sweep", "overrides", "axes", "variants", "match"}
    for key in table:
        if key not in known:
            raise ConfigError(f"{where}: unknown section [{key}]; a grid has {sorted(known)} (see docs/slurm.md)")
    sweep = table.get("sweep", {})
    for key in ("name", "base"):
        if key not in sweep:
            raise ConfigError(f"{where}: [sweep] needs `{key}` (see docs/slurm.md for the grid format)")
    base = (path.parent / sweep["base"]).resolve()
    if not base.is_file():
        raise ConfigError(f"{where}: [sweep] base = {sweep['base']!r} -> {base} does not exist")
    axes = _flatten(table.get("axes", {}))
    for key, values in axes.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: axis {key!r} must be a non-empty list, got {values!r}")
    variants: dict[str, dict[str, Any]] = {}
    for vname, vtable in (table.get("variants") or {}).items():
        vtable = dict(vtable)
        merged: dict[str, Any] = {}
        if "config" in vtable:
            merged.update(_flatten(read_toml(path.parent / vtable.pop("config"))))
        merged.update(_flatten(vtable))
        variants[vname] = merged
    match = dict(table.get("match", {}))
    if match and match.get("reference") not in variants:
        raise ConfigError(f"{where}: [match] reference = {match.get('reference')!r} is not a variant "
                          f"({sorted(variants)})")
    return Grid(path=path, name=str(sweep["name"]), base=base,
                dir=Path(sweep.get("dir", f"runs/sweeps/{sweep['name']}")),
                run_name=str(sweep.get("run_name", _default_run_name(list(axes), bool(variants)))),
                max_parallel=int(sweep.get("max_parallel", 4)), overrides=_flatten(table.get("overrides", {})),
                axes=axes, variants=variants, match=match)


def _default_run_name(axis_keys: list[str], has_variants: bool) -> str:
    parts = (["{variant}"] if has_variants else []) + [f"{k.split('.')[-1]}{{{k}}}" for k in axis_keys]
    return "-".join(parts) or "run"


def _format_name(template: str, fields: dict[str, Any], where: str) -> str:
    # str.format treats dots as attribute access: substitute the dotted keys by hand.
    out = []
    for literal, key, spec, _ in string.Formatter().parse(template):
        out.append(literal)
        if key is None:
            continue
        if key not in fields:
            raise ConfigError(f"{where}: run_name field {{{key}}} is neither 'variant' nor an axis "
                              f"({sorted(fields)})")
        out.append(format(fields[key], spec or ""))
    return "".join(out)


def _argv(base: Path, settings: dict[str, Any]) -> list[str]:
    argv = ["--config", str(base)]
    for key, value in settings.items():
        argv += [f"--{key}", _toml_value(value)]
    return argv


def _matched(grid: Grid, settings: dict[str, Any], variant: str) -> dict[str, Any]:
    """The shape (d_model, n_layers, heads) eval.match.plan picks for this variant so that it matches
    the reference variant at the same grid point (same n_ctx, seed, ...) by FLOPs per token."""
    if not grid.match or variant == grid.match["reference"]:
        return {}
    from eval.match import plan  # the planner; only a grid with [match] pays for importing it
    from pretrain.config import RunConfig
    from stackcore.config import load_config

    point = {k: v for k, v in settings.items() if k in grid.axes}
    ref_settings = {**grid.overrides, **grid.variants[grid.match["reference"]], **point}
    reference = load_config(RunConfig, grid.base, _argv(grid.base, ref_settings)[2:]).model
    family = load_config(RunConfig, grid.base, _argv(grid.base, settings)[2:]).model.family
    rows = plan(reference, family, by=str(grid.match.get("by", "flops")), heads=grid.match.get("heads"))
    if not rows:
        raise ConfigError(f"{grid.path}: eval.match.plan found no {family} shape matching variant "
                          f"{grid.match['reference']!r} at {point}")
    best = rows[0]
    return {"model.d_model": best["d_model"], "model.n_layers": best["n_layers"], "model.heads": best["heads"]}


def expand(grid_path: str | Path) -> list[tuple[str, list[str]]]:
    """Every run of the grid as (run name, argv for pretrain.train.main), in a stable order."""
    grid = load_grid(grid_path)
    runs: list[tuple[str, list[str]]] = []
    axis_keys = list(grid.axes)
    variants = grid.variants or {"": {}}
    seen: dict[str, dict[str, Any]] = {}
    for vname, vsettings in variants.items():
        for combo in itertools.product(*(grid.axes[k] for k in axis_keys)):
            point = dict(zip(axis_keys, combo))
            settings = {**grid.overrides, **vsettings, **point}
            settings.update(_matched(grid, settings, vname))
            name = _format_name(grid.run_name, {"variant": vname, **point}, str(grid.path))
            if name in seen:
                raise ConfigError(f"{grid.path}: two runs are both named {name!r}; put every axis in "
                                  f"[sweep] run_name (now {grid.run_name!r})")
            seen[name] = settings
            settings.update({"run.name": name, "run.dir": str(grid.dir)})
            runs.append((name, _argv(grid.base, settings)))
    return runs


def run_dirs(grid_path: str | Path) -> list[Path]:
    grid = load_grid(grid_path)
    return [grid.dir / name for name, _ in expand(grid_path)]


def is_finished(run_dir: Path) -> bool:
    """A run that needs no more work: the trainer marked it completed (status.json)."""
    try:
        status = rundir.read_status(run_dir) or {}
    except (OSError, ValueError):
        return False
    return str(status.get("state", "")) == "completed"
