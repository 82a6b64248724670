"""Many tiny shards: prep (plan + tasks + manifest), loader start, one pass and a resume at 1,000 vs
10,000 shards. Each step's time per shard should stay flat as the shard count grows (linear, not
quadratic); tests/test_data_prep_many_shards.py checks the same runs for correctness.

    .venv/bin/python benchmarks/bench_prep_shards.py [--shards 1000 10000]

One document per shard (sample_tokens = shard_tokens = 1) from 4 input files (4 tasks). fsync is
turned off here: 10,000 fsyncs would measure only this machine's disk, not the code.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from data_prep.format import check_shard_sizes, read_manifest, shard_paths  # noqa: E402
from data_prep.pool import run_tasks  # noqa: E402
from data_prep.tasks import finalize, plan_tasks  # noqa: E402
from pretrain.data import Stream, StreamSpec  # noqa: E402
from stackcore.paths import shared_dir  # noqa: E402

FILES = 4


def write_inputs(folder: Path, shards: int) -> list[str]:
    lines = (shared_dir("data") / "tinystories/train-head.jsonl").read_text().splitlines()
    sentences = [s.strip() + "." for line in lines for s in json.loads(line)["text"].split(".") if s.strip()]
    paths = []
    for f in range(FILES):
        path = folder / f"part-{f}.jsonl"
        path.write_text("".join(json.dumps({"text": f"{f}-{i}: {sentences[i % len(sentences)]}"}) + "\n"
                                for i in range(shards // FILES)))
        paths.append(str(path))
    return paths


def spec_of(out: Path, manifest: dict) -> StreamSpec:
    records = [s for s in manifest["shards"] if s["split"] == "train"]
    return StreamSpec(tuple(str(p) for p in shard_paths(out, manifest, "train")), 0, 1, 3, 16, "packed",
                      "right", int(manifest["eos_id"]), manifest["dtype"], 1, 4,
                      tuple(r["bytes"] for r in records), tuple(r["task"] for r in records))


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def one_size(shards: int) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="bench-shards-"))
    try:
        inputs, out = write_inputs(folder, shards), folder / "prep"
        t_plan, plan = timed(lambda: plan_tasks(inputs, out, tokenizer="gpt2", val_fraction=0.0, sample_tokens=1,
                                                shard_tokens=1))
        t_tasks, _ = timed(lambda: run_tasks(out, [t["index"] for t in plan["tasks"]], 1, show_progress=False))
        t_final, manifest = timed(lambda: finalize(out))
        assert len(manifest["shards"]) == shards // FILES * FILES
        t_start, spec = timed(lambda: (check_shard_sizes(out, read_manifest(out)), spec_of(out, manifest))[1])
        stream = Stream(spec)
        batches = sum(s["tokens"] for s in manifest["shards"]) // (4 * 16) - 2
        t_pass, _ = timed(lambda: [stream.next_micro_batch() for _ in range(batches)])
        t_resume, _ = timed(lambda: Stream(spec, stream.state()).next_micro_batch())
        return {"plan": t_plan, "tasks": t_tasks, "finalize": t_final, "loader start": t_start,
                "loader pass": t_pass, "resume": t_resume}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, nargs="+", default=[1000, 10000])
    args = parser.parse_args()
    os.fsync = lambda fd: None  # see the module doc
    one_size(100)  # warm-up: imports, tokenizer load
    results = {}
    for n in args.shards:  # best of 2 per step: the machine is shared
        runs = [one_size(n), one_size(n)]
        results[n] = {step: min(r[step] for r in runs) for step in runs[0]}
    first, last = args.shards[0], args.shards[-1]
    print(f"many tiny shards (1 document each, {FILES} tasks, fsync off), load average {os.getloadavg()[0]:.1f}")
    print(f"{'step':14s} " + " ".join(f"{n:>8,d} sh" for n in args.shards) + "   us/shard at each size   growth")
    for step in results[first]:
        times = [results[n][step] for n in args.shards]
        per = [1e6 * results[n][step] / n for n in args.shards]
        growth = (results[last][step] / results[first][step]) / (last / first) if results[first][step] else np.nan
        print(f"{step:14s} " + " ".join(f"{t:9.3f} s" for t in times) + "   " +
              " ".join(f"{p:8.0f}" for p in per) + f"   {growth:5.2f} (1.0 = linear)")


if __name__ == "__main__":
    main()
