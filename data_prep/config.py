"""The prep configuration (`configs/prep/*.toml`, or flags) through the project's typed-config mechanism.

    python -m data_prep tokenize --config configs/prep/fineweb-edu.toml --workers 64
    python -m data_prep tokenize --input a.parquet b.parquet --tokenizer gpt2 --out data/x --val-fraction 0.01

Flags are the config keys with `-` for `_`; `--input` takes several values; `--resume` needs none.
An unknown flag fails naming the closest valid one (stackcore.config).
"""
from __future__ import annotations

import os
import typing
from dataclasses import dataclass, field, fields
from typing import Literal

from stackcore.config import ConfigError, load_config, parse_overrides


@dataclass
class PrepConfig:
    input: list[str] = field(default_factory=list)  # files, globs, directories or builtin:python-docs
    tokenizer: str = "gpt2"  # a tiktoken name or a .tiktoken file (metadata in FILE.tiktoken.json)
    out: str = ""  # the prep directory (manifest.json, shards, plan.json, tasks/)
    workers: int = 0  # processes; 0 = every CPU of this machine
    val_fraction: float = 0.01  # share of documents (by hash of the text) in the `val` split
    text_column: str = "text"  # Parquet column / JSON field holding the document
    shard_tokens: int = 50_000_000  # a shard closes after the document that reaches this many tokens
    sample_tokens: int = 131_072  # a webdataset sample (one zstd array) closes likewise
    task_mb: float = 512  # Parquet: consecutive row groups are grouped into tasks of about this many MB
    on_error: Literal["raise", "skip"] = "raise"  # skip: bad documents become counted skips
    max_doc_bytes: int = 8_000_000  # longer documents are bad input (a 100 MB "document" is an error)
    resume: bool = False  # redo only unfinished tasks of an existing plan in `out`
    progress: bool = True  # the tqdm bar (stderr)

    def validate(self) -> None:
        if self.workers < 0:
            raise ConfigError(f"workers must be >= 0 (0 = all CPUs), got {self.workers}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        for key in ("shard_tokens", "sample_tokens", "max_doc_bytes"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.task_mb <= 0:
            raise ConfigError(f"task_mb must be > 0, got {self.task_mb}")

    def n_workers(self) -> int:
        return self.workers or os.cpu_count() or 1


# Options that change the shards: a resumed run must use the same ones.
PLAN_OPTIONS = ("tokenizer", "val_fraction", "text_column", "shard_tokens", "sample_tokens", "task_mb",
                "on_error", "max_doc_bytes")


def parse_args_into(cls: type, argv: list[str]):
    """`[--config FILE] [--key value ...]` -> a `cls` dataclass (flags override the file). List fields take
    several values, bool fields may stand alone (`--resume`); keys use `-` or `_`."""
    hints = typing.get_type_hints(cls)
    list_keys = {f.name for f in fields(cls) if typing.get_origin(hints[f.name]) is list}
    flag_keys = {f.name for f in fields(cls) if hints[f.name] is bool}
    str_keys = {f.name for f in fields(cls) if hints[f.name] is str}
    config_path, lists, overrides = None, {}, []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"):
            raise ConfigError(f"unexpected argument {arg!r}: options look like --key value "
                              "(several inputs go after one --input)")
        key, _, inline = arg[2:].partition("=")
        key = key.replace("-", "_")
        values = [inline] if inline else []
        i += 1
        while not inline and i < len(argv) and not argv[i].startswith("--"):
            values.append(argv[i])
            i += 1
        if key == "config":
            if len(values) != 1:
                raise ConfigError("--config takes one TOML file")
            config_path = values[0]
        elif key in list_keys:
            lists.setdefault(key, []).extend(values)
        elif key in flag_keys and not values:
            overrides += [f"--{key}", "true"]
        elif len(values) == 1:
            overrides += [f"--{key}", values[0]]
        else:
            raise ConfigError(f"--{key.replace('_', '-')} takes one value, got {values or 'none'}")
    extra = parse_overrides(overrides)
    for key in str_keys & set(extra):  # `--out 5` is a directory named 5, not the integer 5
        extra[key] = str(extra[key])
    extra.update(lists)
    return load_config(cls, config_path, extra=extra)


def parse_prep_args(argv: list[str]) -> PrepConfig:
    return parse_args_into(PrepConfig, argv)
