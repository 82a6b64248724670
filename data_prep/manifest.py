"""Building manifest.json from the plan and the task completion records (schema: data_prep.format).

Everything but `timings` is a function of the inputs and options, so an interrupted-and-resumed run and
an uninterrupted one differ at most there.
"""
from __future__ import annotations

import hashlib
from collections import Counter

from data_prep.format import MANIFEST_VERSION
from data_prep.readers import InputError

SPLIT_ORDER = {"train": 0, "val": 1}


def _inputs(plan: dict, records: list[dict]) -> list[dict]:
    """Per input file: read = written + skipped (summed over its tasks), plus unreadable files."""
    by_path: dict[str, dict] = {}
    for record in records:
        path = record["unit"]["path"]
        entry = by_path.setdefault(path, {"path": path, "read": 0, "written": 0, "skipped": Counter()})
        stats = record["input"]
        entry["read"] += stats["read"]
        entry["written"] += stats["written"]
        entry["skipped"].update(stats["skipped"])
        for key, value in stats.items():
            if key not in ("read", "written", "skipped"):
                entry[key] = value  # e.g. txt_rule
    for bad in plan.get("unreadable_inputs", []):
        by_path[bad["path"]] = {"path": bad["path"], "read": 0, "written": 0, "skipped": Counter(),
                                "error": bad["error"]}
    out = []
    for entry in by_path.values():
        entry["skipped"] = dict(sorted(entry["skipped"].items()))
        if entry["read"] != entry["written"] + sum(entry["skipped"].values()):
            raise InputError(f"{entry['path']}: internal count mismatch: read {entry['read']} != written "
                             f"{entry['written']} + skipped {entry['skipped']}; please report this bug")
        out.append(entry)
    return out


def build_manifest(plan: dict, records: list[dict]) -> dict:
    shards = sorted((s for r in records for s in r["shards"]),
                    key=lambda s: (SPLIT_ORDER.get(s["split"], 9), s["task"], s["seq"]))
    splits: dict[str, dict] = {}
    for record in records:
        for split, numbers in record["splits"].items():
            agg = splits.setdefault(split, {"documents": 0, "tokens": 0, "utf8_bytes": 0, "shards": 0})
            for key in ("documents", "tokens", "utf8_bytes"):
                agg[key] += numbers[key]
    for shard in shards:
        splits[shard["split"]]["shards"] += 1
    inputs = _inputs(plan, records)
    documents = sum(s["documents"] for s in splits.values())
    tokens = sum(s["tokens"] for s in splits.values())
    utf8 = sum(s["utf8_bytes"] for s in splits.values())
    disk = sum(s["bytes"] for s in shards)
    if documents == 0:
        read = sum(i["read"] for i in inputs)
        skipped = Counter()
        for i in inputs:
            skipped.update(i["skipped"])
        raise InputError(f"empty corpus: no document written from {len(inputs)} input(s) ({read} read, skipped: "
                         f"{dict(skipped) or 'none'}); check --input and --text-column")
    fingerprint = hashlib.sha256("".join(f"{s['name']} {s['sha256']}\n" for s in shards).encode()).hexdigest()
    return {
        "version": MANIFEST_VERSION,
        "tokenizer": plan["tokenizer"], "tokenizer_spec": plan["tokenizer_spec"],
        "vocab_size": plan["vocab_size"], "eos_id": plan["eos_id"], "ranks_sha256": plan["ranks_sha256"],
        "dtype": plan["dtype"],
        "options": plan["options"],
        **({"pairs": plan["pairs"]} if "pairs" in plan else {}),  # data_prep.pairs: how pairs were made
        "tasks": len(records),
        "shards": shards,
        "inputs": inputs,
        "totals": {
            "documents": documents, "tokens": tokens, "utf8_bytes": utf8,
            "bytes_per_token": round(utf8 / tokens, 6) if tokens else 0.0,
            "disk_bytes": disk, "disk_bytes_per_token": round(disk / tokens, 6) if tokens else 0.0,
            "read": sum(i["read"] for i in inputs),
            "skipped": dict(sorted(sum((Counter(i["skipped"]) for i in inputs), Counter()).items())),
            "splits": splits,
        },
        "fingerprint": fingerprint,
        "timings": {"task_seconds": round(sum(r["elapsed_s"] for r in records), 3)},
    }
