"""Typed configuration: nested dataclasses <- TOML files <- `--section.key value` overrides.

One mechanism for every part of the stack (data prep, training, Slurm, eval). It imports no torch so
that prep nodes and launchers start fast.

    cfg = load_config(RunConfig, "configs/runs/tiny.toml", ["--train.lr", "3e-4"])
    dump_toml(cfg)  # fully resolved, round-trips through load_config

Unknown sections/keys and values of the wrong type raise ConfigError naming the key and the closest
valid one.
"""
from __future__ import annotations

import dataclasses
import difflib
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from stackcore.errors import UserError

T = TypeVar("T")


class ConfigError(UserError, ValueError):
    """A bad configuration value or key; the message names the key and how to fix it."""


def _closest(name: str, valid: list[str]) -> str:
    match = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    hint = f"did you mean '{match[0]}'?" if match else f"valid keys: {', '.join(sorted(valid))}"
    return hint


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(value: Any, typ: Any, where: str) -> Any:
    """Checks (and gently converts) one value against a field's annotation."""
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(typ)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is typing.Literal:
        choices = typing.get_args(typ)
        if value not in choices:
            raise ConfigError(f"{where}: {value!r} is not one of {list(choices)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        (item_t, *_) = typing.get_args(typ) or (Any,)
        items = [_coerce(v, item_t, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items  # a tuple field (immutable default) stays a tuple
    if origin is dict or typ is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(typ):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a [section] table, got {value!r}")
        return _build(typ, value, where)
    if typ is Any:
        return value
    if typ is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return int(value)
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def _build(cls: type[T], table: dict[str, Any], where: str = "") -> T:
    types_ = _field_types(cls)
    kwargs = {}
    for key, value in table.items():
        path = f"{where}.{key}" if where else key
        if key not in types_:
            raise ConfigError(f"unknown key '{path}': {_closest(key, list(types_))}")
        kwargs[key] = _coerce(value, types_[key], path)
    try:
        obj = cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        raise ConfigError(f"section '{where or cls.__name__}': {exc}") from None
    check = getattr(obj, "validate", None)
    if callable(check):
        check()
    return obj


def _parse_scalar(text: str) -> Any:
    """Parses an override value as TOML when it is a TOML literal, else keeps the string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """`['--train.lr', '3e-4', '--model.norm=false']` -> nested dict."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise ConfigError(f"override '{arg}' must look like --section.key value")
        key = arg[2:]
        if "=" in key:
            key, raw = key.split("=", 1)
            i += 1
        else:
            if i + 1 >= len(args):
                raise ConfigError(f"override '{arg}' has no value")
            raw = args[i + 1]
            i += 2
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = _parse_scalar(raw)
    return out


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def read_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        table = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    # `include = "other.toml"` pulls in a base file (relative to this one), e.g. a model config.
    includes = table.pop("include", [])
    for inc in [includes] if isinstance(includes, str) else includes:
        table = merge(read_toml(path.parent / inc), table)
    return table


def from_dict(cls: type[T], table: dict[str, Any]) -> T:
    return _build(cls, table)


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None,
                extra: dict[str, Any] | None = None) -> T:
    table = read_toml(path) if path else {}
    if extra:
        table = merge(table, extra)
    table = merge(table, parse_overrides(overrides or []))
    if path:
        try:
            return _build(cls, table)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    return _build(cls, table)


def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise ConfigError(f"cannot write {value!r} to TOML")


def dump_toml(obj: Any, header: str = "") -> str:
    """Writes a (nested) config as TOML: dicts become [sections]; None is omitted (TOML has no null)."""
    table = to_dict(obj) if dataclasses.is_dataclass(obj) else obj
    lines = [f"# {line}" for line in header.splitlines()]

    def emit(prefix: str, node: dict[str, Any]) -> None:
        scalars = {k: v for k, v in node.items() if not isinstance(v, dict)}
        if prefix:
            lines.append(f"\n[{prefix}]")
        for key, value in scalars.items():
            if value is not None:
                lines.append(f"{key} = {_toml_value(value)}")
        for key, value in node.items():
            if isinstance(value, dict):
                emit(f"{prefix}.{key}" if prefix else key, value)

    emit("", table)
    return "\n".join(lines).lstrip("\n") + "\n"



def split_config_argv(argv: list[str]) -> tuple[str | None, list[str]]:
    """`[--config FILE | --config=FILE] [--section.key value ...]` -> (FILE or None, the overrides).
    The one argv convention of every entry point that takes a run config."""
    config, rest, i = None, [], 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--config":
            if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
                raise ConfigError("--config needs a file: --config FILE.toml")
            config, i = argv[i + 1], i + 2
            continue
        if arg.startswith("--config="):
            config = arg.split("=", 1)[1]
        else:
            rest.append(arg)
        i += 1
    return config, rest


def load_cli(cls: type[T], argv: list[str]) -> T:
    """A typed config from an entry point's argv (see split_config_argv)."""
    config, overrides = split_config_argv(argv)
    return load_config(cls, config, overrides)
