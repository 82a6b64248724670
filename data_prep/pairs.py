"""(query, passage) pairs -> token shards, with the discipline of `tokenize` (the retrieval data).

    python -m data_prep pairs --input FILES --tokenizer T --out DIR [--query SPEC --passage SPEC]
                              [--val-fraction F] [--workers N] [--resume] [--on-error skip]

SPEC is `field:NAME` (a JSONL field / Parquet column: a title, a summary) or a rule that derives the pair
from a plain document (`--text-column`): `first-sentence` -> `rest` (the default) or `lead` (the first
paragraph) -> `rest`. Field specs need JSONL or Parquet inputs; rules work on every reader.

Layout: one pair is one shard *document* `query EOS passage EOS` (tokens of `encode_ordinary`, which never
emits EOS, so the first EOS separates the two). Shards, plan, task markers, manifest and `verify` are
exactly those of `tokenize` (data_prep.tasks plans, pools and finalizes; `run_task` hands pair plans to
`run_pair_task` here); the manifest gains a `pairs` section saying how the pairs were made.

Split: by a hash of the *passage* text, so a passage (even one repeated in the corpus) is never in both
splits. Documents from which no pair can be derived (no sentence end, one paragraph) are counted as
skipped (`no_pair`), so read = written + skipped still holds per file.
"""
from __future__ import annotations

import hashlib
import json
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from data_prep.config import PrepConfig, parse_args_into
from data_prep.format import atomic_write_json, token_dtype
from data_prep.pair_format import LAYOUT, Pairs, read_pairs  # noqa: F401 (re-exported)
from data_prep.readers import InputError, InputStats, JsonlReader, _Reader, input_kind, read_documents
from data_prep.shards import SplitWriter
from data_prep.tokenizer import eos_id
from data_prep.tasks import PLAN_NAME, SPLITS, PrepError, _remove_leftovers, _tokenizer, expand_inputs, \
    marker_path, plan_from_config, read_plan, write_task_record
from stackcore.config import ConfigError

QUERY_RULES = ("first-sentence", "lead")
PASSAGE_RULES = ("rest",)
FIELD_PREFIX = "field:"
# A sentence ends at . ! or ? (closing quotes/brackets kept with it) followed by white space.
SENTENCE_END = re.compile(r"[.!?][\"'\u201d\u2019)\]]*\s+")
PARAGRAPH_END = re.compile(r"\n\s*\n")


@dataclass
class PairsConfig(PrepConfig):
    query: str = "first-sentence"  # field:NAME | first-sentence | lead
    passage: str = "rest"  # field:NAME | rest

    def validate(self) -> None:
        super().validate()
        pair_spec(self.query, self.passage)


def pair_spec(query: str, passage: str) -> dict:
    """The manifest's `pairs` section for two SPECs; a bad combination is a ConfigError naming the fix."""
    q_field, p_field = query.startswith(FIELD_PREFIX), passage.startswith(FIELD_PREFIX)
    if q_field != p_field:
        raise ConfigError(f"--query {query!r} with --passage {passage!r}: use two fields (field:A, field:B) "
                          f"or a rule pair ({'/'.join(QUERY_RULES)} with rest)")
    if q_field:
        names = [query[len(FIELD_PREFIX):], passage[len(FIELD_PREFIX):]]
        if not all(names) or names[0] == names[1]:
            raise ConfigError(f"--query {query!r} --passage {passage!r}: name two different fields")
    elif query not in QUERY_RULES or passage not in PASSAGE_RULES:
        raise ConfigError(f"--query {query!r} --passage {passage!r}: the rules are --query "
                          f"{' | '.join(QUERY_RULES)} with --passage rest, or field:NAME for both")
    return {"query": query, "passage": passage, "layout": LAYOUT, "split_by": "passage"}


def derive_pair(text: str, rule: str) -> tuple[str, str] | None:
    """(query, rest) of a plain document by `rule`, or None when the document holds no such split."""
    found = (SENTENCE_END if rule == "first-sentence" else PARAGRAPH_END).search(text)
    if found is None:
        return None
    query, rest = text[:found.start()] + text[found.start():found.end()].rstrip(), text[found.end():]
    query, rest = query.strip(), rest.strip()
    return (query, rest) if query and rest else None


# ---- reading pairs from one planned unit ------------------------------------------------------------

def _rule_pairs(unit: dict, stats: InputStats, opts: dict, rule: str) -> Iterator[tuple[str, str]]:
    """Pairs derived from the documents any reader yields (JSONL, Parquet, text, builtin)."""
    for text, _ in read_documents(unit, stats, text_column=opts["text_column"], on_error=opts["on_error"],
                                  max_doc_bytes=opts["max_doc_bytes"]):
        pair = derive_pair(text, rule)
        if pair is None:
            stats.skipped["no_pair"] += 1
            continue
        yield pair


def _checked_pair(reader: _Reader, values: list, names: list[str], where) -> tuple[str, str] | None:
    """Both fields as strings within the size limit, else None after counting (or raising) the reason."""
    for value, name in zip(values, names):
        if not isinstance(value, str):
            got = "missing/null" if value is None else type(value).__name__
            reader.problem("missing_text", where, f"field {name!r} is {got}, not text; choose the fields "
                           "with --query field:NAME --passage field:NAME")
            return None
    if any(not v.strip() for v in values):
        reader.stats.skipped["empty"] += 1
        return None
    size = sum(len(v.encode("utf-8", "surrogatepass")) for v in values)
    if size > reader.max_doc_bytes:
        reader.problem("too_long", where, f"pair of {size:,} bytes exceeds --max-doc-bytes {reader.max_doc_bytes:,}")
        return None
    return values[0].strip(), values[1].strip()


def _jsonl_field_pairs(reader: JsonlReader, names: list[str]) -> Iterator[tuple[str, str]]:
    for lineno, line in enumerate(reader.lines(), 1):
        if line.isspace():
            continue
        reader.stats.read += 1
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            reader.problem("malformed_json", lineno, f"malformed JSON line ({exc})")
            continue
        if not isinstance(record, dict):
            reader.problem("malformed_json", lineno, f"expected a JSON object, got {type(record).__name__}")
            continue
        if (pair := _checked_pair(reader, [record.get(n) for n in names], names, lineno)) is not None:
            yield pair


def _parquet_field_pairs(reader: _Reader, unit: dict, names: list[str]) -> Iterator[tuple[str, str]]:
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(reader.path)
    missing = [n for n in names if n not in pf.schema_arrow.names]
    if missing:
        raise InputError(f"{reader.path}: no column {missing} (columns: {', '.join(pf.schema_arrow.names)}); "
                         "choose them with --query field:NAME --passage field:NAME")
    for rg in unit["row_groups"]:
        row = 0
        for batch in pf.iter_batches(batch_size=1024, row_groups=[rg], columns=names, use_threads=False):
            for values in zip(*(batch.column(i).to_pylist() for i in range(len(names)))):
                reader.stats.read += 1
                if (pair := _checked_pair(reader, list(values), names, (rg, row))) is not None:
                    yield pair
                row += 1


def unit_pairs(unit: dict, stats: InputStats, opts: dict, spec: dict) -> Iterator[tuple[str, str]]:
    """The (query, passage) texts of one planned unit, counted in `stats` like `read_documents`."""
    if not spec["query"].startswith(FIELD_PREFIX):
        yield from _rule_pairs(unit, stats, opts, spec["query"])
        return
    names = [spec["query"][len(FIELD_PREFIX):], spec["passage"][len(FIELD_PREFIX):]]
    common = dict(stats=stats, on_error=opts["on_error"], max_doc_bytes=opts["max_doc_bytes"],
                  text_column=opts["text_column"])
    if unit["kind"] == "jsonl":
        yield from _jsonl_field_pairs(JsonlReader(unit["path"], **common), names)
    elif unit["kind"] == "parquet":
        yield from _parquet_field_pairs(_Reader(unit["path"], **common), unit, names)
    else:
        raise InputError(f"{unit['path']}: {unit['kind']} input has no fields; field:NAME specs need JSONL or "
                         "Parquet, use --query first-sentence or lead (with --passage rest) for plain text")


# ---- tasks ------------------------------------------------------------------------------------------

def plan_pairs(cfg: PairsConfig) -> dict:
    """plan.json of `tokenize` plus the `pairs` section; a resumed plan must have the same specs."""
    spec = pair_spec(cfg.query, cfg.passage)
    if spec["query"].startswith(FIELD_PREFIX):  # refuse before a plan exists, not in the first task
        for path in expand_inputs(cfg.input):
            if input_kind(path) not in ("jsonl", "parquet"):
                raise InputError(f"{path}: {input_kind(path)} input has no fields; field:NAME specs need JSONL "
                                 "or Parquet, use --query first-sentence or lead (with --passage rest)")
    plan = plan_from_config(cfg)
    if plan.get("pairs") == spec:
        return plan
    if plan.get("pairs") is not None:
        raise PrepError(f"{Path(cfg.out) / PLAN_NAME}: --resume with pairs {spec['query']} -> {spec['passage']}, "
                        f"the interrupted run used {plan['pairs']['query']} -> {plan['pairs']['passage']}; "
                        "rerun with the original specs or use a new --out")
    if any(marker_path(cfg.out, t["index"]).is_file() for t in plan["tasks"]):
        raise PrepError(f"{cfg.out}: holds a `tokenize` prep, not pairs; use a new --out")
    plan["pairs"] = spec
    atomic_write_json(Path(cfg.out) / PLAN_NAME, plan)
    return plan


def passage_is_val(passage_utf8: bytes, val_fraction: float) -> bool:
    """The split of a pair: a hash of its passage, so equal passages always share a split."""
    h = int.from_bytes(hashlib.blake2b(passage_utf8, digest_size=8).digest(), "little")
    return val_fraction > 0 and h < val_fraction * 2**64


def _write_pairs(pairs: Iterator[tuple[str, str]], writers: dict, enc, stats: InputStats,
                 val_fraction: float, progress: Callable | None) -> None:
    eos = eos_id(enc)
    for query, passage in pairs:
        q_utf8, p_utf8 = query.encode("utf-8"), passage.encode("utf-8")
        ids = enc.encode_ordinary(query) + [eos] + enc.encode_ordinary(passage) + [eos]
        split = "val" if passage_is_val(p_utf8, val_fraction) else "train"
        writers[split].add(ids, len(q_utf8) + len(p_utf8))
        stats.written += 1
        if progress:
            progress(1, len(ids), len(q_utf8) + len(p_utf8))


def run_pair_task(out_dir: str | Path, index: int, plan: dict, progress: Callable | None = None) -> dict:
    """`data_prep.tasks.run_task` for a pairs plan: same marker, leftovers and record contract."""
    out = Path(out_dir)
    if not 0 <= index < len(plan["tasks"]):
        raise PrepError(f"task {index} out of range: the plan in {out} has {len(plan['tasks'])} tasks")
    marker = marker_path(out, index)
    if marker.is_file():
        return json.loads(marker.read_text())
    started = time.perf_counter()
    unit, opts = plan["tasks"][index], plan["options"]
    _remove_leftovers(out, index)
    enc = _tokenizer(opts["tokenizer"], plan["ranks_sha256"])
    writers = {split: SplitWriter(out, split, index, token_dtype(enc.n_vocab), opts["sample_tokens"],
                                  opts["shard_tokens"]) for split in SPLITS}
    stats = InputStats()
    try:
        _write_pairs(unit_pairs(unit, stats, opts, plan["pairs"]), writers, enc, stats, opts["val_fraction"],
                     progress)
        shards = [s for split in SPLITS for s in writers[split].close()]
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    return write_task_record(marker, index, unit, stats, writers, shards, started)


def finalize_pairs(out_dir: str | Path) -> dict:
    """`tasks.finalize` plus the `pairs` section in manifest.json (idempotent)."""
    from data_prep.format import MANIFEST_NAME
    from data_prep.tasks import finalize

    manifest = finalize(out_dir)
    if "pairs" not in manifest:  # manifest.build_manifest may already carry it over from the plan
        manifest["pairs"] = read_plan(out_dir)["pairs"]
        atomic_write_json(Path(out_dir) / MANIFEST_NAME, manifest)
    return manifest


# ---- CLI --------------------------------------------------------------------------------------------

def main(argv: list[str]) -> int:
    from data_prep.pool import run_tasks
    from data_prep.report import summary
    from data_prep.tasks import pending_tasks

    cfg = parse_args_into(PairsConfig, argv)
    cfg.validate()
    started = time.perf_counter()
    plan = plan_pairs(cfg)
    todo = pending_tasks(cfg.out)
    done = len(plan["tasks"]) - len(todo)
    if done:
        print(f"resuming: {done} of {len(plan['tasks'])} tasks already done", file=sys.stderr)
    if todo:
        run_tasks(cfg.out, todo, cfg.n_workers(), show_progress=cfg.progress)
    manifest = finalize_pairs(cfg.out)
    print(summary(manifest, cfg.out, time.perf_counter() - started if not done else None))
    splits = manifest["totals"]["splits"]
    print(f"pairs ({cfg.query} -> {cfg.passage}): " + ", ".join(
        f"{split} {splits.get(split, {}).get('documents', 0):,}" for split in SPLITS))
    return 0


__all__ = ["PairsConfig", "pair_spec", "derive_pair", "plan_pairs", "run_pair_task", "finalize_pairs",
           "read_pairs", "Pairs", "passage_is_val", "main"]
