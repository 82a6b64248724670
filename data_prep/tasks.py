"""The unit of work: plan the tasks once, run any task by index (a pool worker or a Slurm array element),
then finalize the manifest. Public API (the Slurm launcher builds on it):

    plan = plan_tasks(inputs, out_dir, tokenizer="gpt2", **options)  # writes OUT/plan.json
    run_task(out_dir, index)        # writes that task's shards + OUT/tasks/{index:05d}.json; idempotent
    pending_tasks(out_dir)          # indices without a completion marker
    finalize(out_dir)               # OUT/manifest.json once every task is done

A task is a deterministic slice of the inputs (a file, or consecutive Parquet row groups of one file)
fixed by the plan alone, so 1 worker, 64 workers or a Slurm array write byte-identical shards. A task's
shards appear only under their final names and its marker is written last: a task without a marker is
unfinished, and re-running it first deletes whatever it left behind.
"""
from __future__ import annotations

import functools
import glob
import hashlib
import itertools
import json
import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from data_prep.block_encode import BlockEncoder
from data_prep.builtin_corpus import BUILTIN_PREFIX, builtin_parts
from data_prep.config import PLAN_OPTIONS, PrepConfig
from data_prep.format import atomic_write_json, token_dtype
from data_prep.readers import InputError, InputStats, input_kind, read_blocks
from data_prep.shards import SplitWriter
from data_prep.tokenizer import describe, eos_id, load_tokenizer, ranks_sha256
from stackcore.errors import UserError

PLAN_NAME = "plan.json"
TASKS_DIR = "tasks"
SPLITS = ("train", "val")
PLAN_VERSION = 1


class PrepError(UserError, RuntimeError):
    """A prep directory in a state that cannot proceed; the message says what to run."""


def expand_inputs(patterns: list[str]) -> list[str]:
    """Files from paths, globs and directories (each sorted), builtins as given; duplicates dropped."""
    out: list[str] = []
    seen: set[str] = set()  # (a list lookup would make thousands of inputs quadratic)
    for pattern in patterns:
        if pattern.startswith(BUILTIN_PREFIX):
            found = [pattern]
        elif Path(pattern).is_dir():
            found = sorted(str(p) for p in Path(pattern).rglob("*") if p.is_file() and _supported(str(p)))
        elif any(ch in pattern for ch in "*?["):
            found = sorted(glob.glob(pattern, recursive=True))
        else:
            found = [pattern]
        if not found:
            raise InputError(f"{pattern}: matches no files")
        for path in found:
            if not path.startswith(BUILTIN_PREFIX):
                if not Path(path).is_file():
                    raise InputError(f"{path}: input file not found")
                path = str(Path(path).resolve())
            if path not in seen:
                seen.add(path)
                out.append(path)
    if not out:
        raise InputError("no inputs: pass --input PATH_OR_GLOB... (or builtin:python-docs)")
    return out


def _supported(path: str) -> bool:
    try:
        input_kind(path)
        return True
    except InputError:
        return False


def _parquet_units(path: str, task_bytes: int, on_error: str) -> tuple[list[dict], str]:
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path).metadata
    except Exception as exc:  # noqa: BLE001 - a bad footer surfaces as several pyarrow types
        message = f"{path}: not a readable Parquet file ({exc}); re-download it"
        if on_error != "skip":
            raise InputError(message + " (or pass --on-error skip to record and skip it)") from None
        return [], message
    units, group, size = [], [], 0
    for rg in range(meta.num_row_groups):
        group.append(rg)
        size += meta.row_group(rg).total_byte_size
        if size >= task_bytes:
            units.append({"path": path, "kind": "parquet", "row_groups": group})
            group, size = [], 0
    if group or not units:
        units.append({"path": path, "kind": "parquet", "row_groups": group})
    return units, ""


def plan_tasks(inputs: list[str], out_dir: str | Path, tokenizer: str = "gpt2", **options: Any) -> dict:
    """Expand the inputs into tasks, write OUT/plan.json and return the plan. `options` are PrepConfig
    fields (val_fraction, text_column, shard_tokens, ...). An existing plan must match (resume)."""
    cfg = PrepConfig(input=list(inputs), tokenizer=str(tokenizer), out=str(out_dir), **options)
    cfg.validate()
    return plan_from_config(cfg)


def plan_from_config(cfg: PrepConfig) -> dict:
    out = Path(cfg.out)
    if not cfg.out:
        raise PrepError("no output directory: pass --out DIR")
    spec = cfg.tokenizer
    if not spec.startswith(BUILTIN_PREFIX) and Path(spec).is_file():
        spec = str(Path(spec).resolve())  # tasks may run elsewhere in the tree (Slurm)
    enc = load_tokenizer(spec)
    tasks, unreadable = [], []
    for path in expand_inputs(cfg.input):
        kind = input_kind(path)
        if kind == "parquet":
            units, error = _parquet_units(path, int(cfg.task_mb * 2**20), cfg.on_error)
            if error:
                unreadable.append({"path": path, "error": error})
        elif kind == "builtin":
            units = [{"path": path, "kind": kind, "part": part} for part in builtin_parts(path)]
        else:
            units = [{"path": path, "kind": kind}]
        tasks += units
    for index, task in enumerate(tasks):
        task["index"] = index
    options = {key: getattr(cfg, key) for key in PLAN_OPTIONS} | {"tokenizer": spec}
    plan = {"version": PLAN_VERSION, "options": options, **describe(spec, enc),
            "dtype": token_dtype(enc.n_vocab).name, "tasks": tasks, "unreadable_inputs": unreadable}
    existing = out / PLAN_NAME
    if existing.is_file():
        old = read_plan(out)
        if not cfg.resume:
            raise PrepError(f"{out} already holds a prep ({PLAN_NAME}); pass --resume to finish it, or choose "
                            "an empty --out")
        for key in ("options", "ranks_sha256", "tasks", "unreadable_inputs"):
            if old.get(key) != plan[key]:
                detail = ""
                if key == "options":
                    detail = ": " + ", ".join(f"{k} {old[key].get(k)!r} -> {v!r}" for k, v in plan[key].items()
                                              if old[key].get(k) != v)
                raise PrepError(f"{existing}: --resume with different {key} than the interrupted run{detail}; "
                                "rerun with the original inputs and options, or use a new --out")
        return old
    if cfg.resume and out.is_dir() and any(out.iterdir()):
        raise PrepError(f"{out}: --resume but no {PLAN_NAME}; this is not a prep directory")
    (out / TASKS_DIR).mkdir(parents=True, exist_ok=True)
    atomic_write_json(existing, plan)
    return plan


def read_plan(out_dir: str | Path) -> dict:
    path = Path(out_dir) / PLAN_NAME
    if not path.is_file():
        raise PrepError(f"{path}: no plan; run `python -m data_prep plan ...` or `tokenize ...` first")
    return json.loads(path.read_text())


def _task_plan(out_dir: str | Path) -> dict:
    """read_plan, parsed once per process while the file is unchanged (never mutate the result): one
    process running thousands of small tasks would otherwise parse the whole plan once per task."""
    path = Path(out_dir) / PLAN_NAME
    try:
        stat = path.stat()
    except OSError:
        return read_plan(out_dir)  # (its error)
    return _parsed_plan(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)
def _parsed_plan(path: str, _mtime_ns: int, _size: int) -> dict:
    return read_plan(Path(path).parent)


def marker_path(out_dir: str | Path, index: int) -> Path:
    return Path(out_dir) / TASKS_DIR / f"{index:05d}.json"


def pending_tasks(out_dir: str | Path) -> list[int]:
    plan = _task_plan(out_dir)
    return [t["index"] for t in plan["tasks"] if not marker_path(out_dir, t["index"]).is_file()]


@functools.lru_cache(maxsize=4)
def _tokenizer(spec: str, sha: str):
    enc = load_tokenizer(spec)
    if ranks_sha256(enc) != sha:
        raise PrepError(f"tokenizer {spec}: ranks changed since planning (sha256 {ranks_sha256(enc)[:12]} != "
                        f"{sha[:12]}); restore the file or re-plan into a new --out")
    return enc


def is_val(utf8: bytes, val_fraction: float) -> bool:
    """Deterministic per document: a hash of its text, so reruns and worker counts agree."""
    if val_fraction <= 0:
        return False
    h = int.from_bytes(hashlib.blake2b(utf8, digest_size=8).digest(), "little")
    return h < val_fraction * 2**64


def val_mask(utf8s: list[bytes], val_fraction: float) -> list[bool] | None:
    """is_val() for a block of documents; None when none of them is in val (the common case)."""
    if val_fraction <= 0:
        return None
    threshold, blake2b, from_bytes = val_fraction * 2**64, hashlib.blake2b, int.from_bytes
    mask = [from_bytes(blake2b(utf8, digest_size=8).digest(), "little") < threshold for utf8 in utf8s]
    return mask if any(mask) else None


# Splitting a block: slices per run of one split cost ~2 add_block calls (~10 us each) per val document,
# a token mask ~4 ns per token; below this many tokens per val document, the mask is cheaper.
SLICES_BELOW_TOKENS_PER_VAL_DOC = 5000


def _write_block(writers: dict[str, SplitWriter], tokens: np.ndarray, lengths: np.ndarray,
                 utf8s: list[bytes], mask: list[bool] | None) -> None:
    """A tokenized block to the train and val writers, documents in their order within each split: by a
    token mask when val documents are dense, else each run of one split's documents as a slice."""
    if mask is None:
        writers["train"].add_block(tokens, lengths, sum(map(len, utf8s)))
        return
    val_docs = sum(mask)
    if val_docs * SLICES_BELOW_TOKENS_PER_VAL_DOC > len(tokens):  # many short documents: one mask pass
        is_val = np.array(mask)
        token_is_val = np.repeat(is_val, lengths)
        val_bytes = sum(map(len, itertools.compress(utf8s, mask)))
        writers["train"].add_block(tokens[~token_is_val], lengths[~is_val], sum(map(len, utf8s)) - val_bytes)
        writers["val"].add_block(tokens[token_is_val], lengths[is_val], val_bytes)
        return
    starts = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    sizes = list(map(len, utf8s))

    def add(split: str, first: int, end: int) -> None:
        writers[split].add_block(tokens[starts[first]:starts[end]], lengths[first:end], sum(sizes[first:end]))

    done = 0
    for index in itertools.compress(range(len(mask)), mask):
        if index > done:
            add("train", done, index)
        add("val", index, index + 1)
        done = index + 1
    if done < len(mask):
        add("train", done, len(mask))


def _leftover_task(name: str) -> int | None:
    """The task of a shard or temp shard file name (`train-00003-00000.tar`, `.val-00003-xyz.tmp`)."""
    stem = name[1:] if name.startswith(".") else name
    split, _, rest = stem.partition("-")
    if split not in SPLITS or not name.endswith(".tmp" if name.startswith(".") else ".tar"):
        return None
    task, dash, _ = rest.partition("-")
    return int(task) if dash and len(task) >= 5 and task.isdigit() else None


def remove_leftovers(out: str | Path, indices: set[int]) -> None:
    """Delete the shards and temp shards of these (unfinished) tasks with one directory scan; then run them
    with run_task(..., leftovers_removed=True): one scan per task would make many tasks quadratic."""
    with os.scandir(out) as entries:
        for entry in entries:
            if _leftover_task(entry.name) in indices:
                Path(entry.path).unlink(missing_ok=True)


def _remove_leftovers(out: Path, index: int) -> None:
    for split in SPLITS:
        for path in list(out.glob(f"{split}-{index:05d}-*.tar")) + list(out.glob(f".{split}-{index:05d}-*.tmp")):
            path.unlink(missing_ok=True)


def run_task(out_dir: str | Path, index: int, progress: Callable[[int, int, int], None] | None = None,
             leftovers_removed: bool = False) -> dict:
    """Run task `index` of the plan in `out_dir`; returns its completion record (also saved as marker).
    A finished task returns its marker untouched. `progress(docs, tokens, utf8_bytes)` gets increments.
    `leftovers_removed`: the caller just ran remove_leftovers() for this task (skips a directory scan)."""
    out = Path(out_dir)
    plan = _task_plan(out)
    if plan.get("pairs"):  # a `data_prep pairs` plan: same tasks, pool and markers, pair documents
        from data_prep.pairs import run_pair_task
        return run_pair_task(out, index, plan, progress)
    if not 0 <= index < len(plan["tasks"]):
        raise PrepError(f"task {index} out of range: the plan in {out} has {len(plan['tasks'])} tasks (0.."
                        f"{len(plan['tasks']) - 1})")
    marker = marker_path(out, index)
    if marker.is_file():
        return json.loads(marker.read_text())
    started = time.perf_counter()
    unit, opts = plan["tasks"][index], plan["options"]
    if not leftovers_removed:
        _remove_leftovers(out, index)
    enc = _tokenizer(opts["tokenizer"], plan["ranks_sha256"])
    encode = BlockEncoder(enc)
    writers = {split: SplitWriter(out, split, index, token_dtype(enc.n_vocab), opts["sample_tokens"],
                                  opts["shard_tokens"]) for split in SPLITS}
    stats = InputStats()
    reported = [0, 0, 0]

    def report() -> None:
        now = [stats.written, sum(w.tokens for w in writers.values()),
               sum(w.utf8_bytes for w in writers.values())]
        progress(*(a - b for a, b in zip(now, reported)))
        reported[:] = now

    try:
        for texts, utf8s in read_blocks(unit, stats, text_column=opts["text_column"],
                                        on_error=opts["on_error"], max_doc_bytes=opts["max_doc_bytes"]):
            if texts:
                _write_block(writers, *encode(texts), utf8s, val_mask(utf8s, opts["val_fraction"]))
                stats.written += len(texts)
                if progress:
                    report()
        shards = [s for split in SPLITS for s in writers[split].close()]
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    if progress:
        report()
    return write_task_record(marker, index, unit, stats, writers, shards, started)


def write_task_record(marker: Path, index: int, unit, stats, writers: dict, shards: list, started: float) -> dict:
    """The task's done-marker (its shards, per-split totals, input statistics): written last and atomically,
    so a task with a marker is complete (tokenize and pairs tasks alike)."""
    splits = {split: {"documents": sum(s["documents"] for s in w.shards),
                      "tokens": sum(s["tokens"] for s in w.shards), "utf8_bytes": w.utf8_bytes}
              for split, w in writers.items()}
    record = {"index": index, "unit": unit, "input": stats.to_dict(), "shards": shards, "splits": splits,
              "elapsed_s": round(time.perf_counter() - started, 3)}
    atomic_write_json(marker, record)
    return record


def finalize(out_dir: str | Path) -> dict:
    """Write OUT/manifest.json from the task markers; every task must be done."""
    from data_prep.manifest import build_manifest

    out = Path(out_dir)
    plan = read_plan(out)
    missing = pending_tasks(out)
    if missing:
        shown = ", ".join(map(str, missing[:20])) + (" ..." if len(missing) > 20 else "")
        raise PrepError(f"{out}: {len(missing)} of {len(plan['tasks'])} tasks unfinished ({shown}); run them "
                        f"(`python -m data_prep run-task {out} INDEX` or `tokenize ... --resume`) first")
    records = [json.loads(marker_path(out, t["index"]).read_text()) for t in plan["tasks"]]
    manifest = build_manifest(plan, records)
    from data_prep.format import MANIFEST_NAME

    atomic_write_json(out / MANIFEST_NAME, manifest)
    return manifest
