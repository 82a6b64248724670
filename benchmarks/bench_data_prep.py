"""Data-prep throughput vs bare tiktoken, and bytes per token on disk.

    .venv/bin/python benchmarks/bench_data_prep.py [--repeats 3]

On the shared corpora (TinyStories jsonl / jsonl.zst / txt, enwiki Parquet) with the GPT-2 ranks:
  bare      a loop of `encode_ordinary` over the texts already in memory (one process)
  pipeline  the whole per-task path in one worker: read + decompress + parse, UTF-8/hash split,
            tokenize, zstd, tar, sha256, markers, manifest
measured alternately, best of N each, so both see the same machine load. Goal: pipeline >= 80% of bare
per worker, and <= 1.6 bytes/token on disk for a vocabulary under 65,536. A 2-worker run shows scaling
(meaningful only on an otherwise idle machine with >= 2 cores).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pyarrow.parquet as pq  # noqa: E402
import zstandard  # noqa: E402

from data_prep.format import read_manifest  # noqa: E402
from data_prep.pool import run_tasks  # noqa: E402
from data_prep.tasks import finalize, plan_tasks  # noqa: E402
from data_prep.tokenizer import load_tokenizer  # noqa: E402
from stackcore.paths import shared_dir  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def shared_data() -> Path:
    return shared_dir("data")  # $MIXERSTACK_SHARED or the folder beside the repository


def corpus_files(data: Path) -> list[Path]:
    return [data / "tinystories/train-head.jsonl", data / "tinystories/train-lower.jsonl.zst",
            data / "tinystories/valid-head.txt", data / "enwiki/enwiki-sample.parquet"]


def load_texts(files: list[Path]) -> list[str]:
    """The same documents the pipeline sees, loaded up front (not timed)."""
    texts = []
    for path in files:
        if path.suffix == ".parquet":
            texts += pq.read_table(path, columns=["text"]).column("text").to_pylist()
        elif path.suffix == ".zst":
            raw = zstandard.ZstdDecompressor().stream_reader(path.open("rb")).read().decode()
            texts += [json.loads(line)["text"] for line in raw.splitlines() if line.strip()]
        elif path.suffix == ".jsonl":
            texts += [json.loads(line)["text"] for line in path.read_text().splitlines() if line.strip()]
        else:
            texts += [p.strip() for p in re.split(r"\n\s*\n", path.read_text()) if p.strip()]
    return texts


def bare(enc, texts: list[str]) -> tuple[float, float, int]:
    """(wall s, CPU s of this process, tokens)."""
    start, cpu = time.perf_counter(), time.process_time()
    tokens = 0
    for text in texts:
        tokens += len(enc.encode_ordinary(text)) + 1  # + EOS, as the pipeline counts it
    return time.perf_counter() - start, time.process_time() - cpu, tokens


def pipeline(files: list[Path], ranks: Path, workers: int) -> tuple[float, float, dict]:
    """(wall s, CPU s of this process (meaningful for 1 in-process worker), manifest)."""
    out = Path(tempfile.mkdtemp(prefix="bench-prep-"))
    try:
        start, cpu = time.perf_counter(), time.process_time()
        plan = plan_tasks([str(f) for f in files], out / "prep", tokenizer=str(ranks), val_fraction=0.01)
        run_tasks(out / "prep", [t["index"] for t in plan["tasks"]], workers, show_progress=False)
        finalize(out / "prep")
        return time.perf_counter() - start, time.process_time() - cpu, read_manifest(out / "prep")
    finally:
        shutil.rmtree(out, ignore_errors=True)


def measure(enc, files: list[Path], ranks: Path, repeats: int) -> dict:
    """Best-of-`repeats` wall and CPU seconds of bare and pipeline on `files`, alternating the two."""
    texts = load_texts(files)
    best = {"bare_wall": 1e9, "bare_cpu": 1e9, "pipe_wall": 1e9, "pipe_cpu": 1e9}
    for _ in range(repeats):
        wall, cpu, bare_tokens = bare(enc, texts)
        best["bare_wall"], best["bare_cpu"] = min(best["bare_wall"], wall), min(best["bare_cpu"], cpu)
        wall, cpu, manifest = pipeline(files, ranks, workers=1)
        best["pipe_wall"], best["pipe_cpu"] = min(best["pipe_wall"], wall), min(best["pipe_cpu"], cpu)
    tokens = manifest["totals"]["tokens"]
    assert tokens == bare_tokens, f"pipeline wrote {tokens} tokens, bare loop made {bare_tokens}"
    return {**best, "tokens": tokens, "documents": len(texts), "manifest": manifest}


def scaling(files: list[Path], ranks: Path, copies: int = 4) -> None:
    """1 vs 2 worker processes on `copies` copies of the corpus (4 x copies tasks); each pool pays its
    process start-up (spawn), as a real run does once."""
    folder = Path(tempfile.mkdtemp(prefix="bench-prep-copies-"))
    try:
        inputs = []
        for i in range(copies):
            for path in files:
                inputs.append(folder / f"{i}-{path.name}")
                shutil.copyfile(path, inputs[-1])
        walls = {workers: pipeline(inputs, ranks, workers)[0] for workers in (1, 2, 1, 2)}
        one, two = walls[1], walls[2]
        print(f"{4 * copies} tasks: 1 worker {one:.2f} s, 2 workers {two:.2f} s = {one / two:.2f}x speed-up "
              f"(ideal 2x on 2 idle cores; this machine is shared, load average {os.getloadavg()[0]:.1f})")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    data = shared_data()
    files, ranks = corpus_files(data), data / "tokenizers/r50k_base.tiktoken"
    enc = load_tokenizer(ranks)
    bare(enc, load_texts(files[:1])[:200])  # warm the regex and caches
    print(f"bare encode_ordinary loop vs the whole pipeline in 1 worker (read, parse, split, tokenize, zstd, tar, "
          f"sha256, manifest); best of {args.repeats}, alternating; OMP_NUM_THREADS=1, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")
    header = (f"{'corpus':34s} {'docs':>6s} {'tokens':>10s} {'tok/doc':>7s} {'bare tok/s':>11s} "
              f"{'pipe tok/s':>11s} {'wall %':>7s} {'CPU %':>7s} {'disk B/tok':>10s}")
    print(header)
    print("-" * len(header))
    results = {}
    for name, group in [(f.name, [f]) for f in files] + [("all four (4 tasks)", files)]:
        r = results[name] = measure(enc, group, ranks, args.repeats)
        print(f"{name:34s} {r['documents']:6,d} {r['tokens']:10,d} {r['tokens'] / r['documents']:7.0f} "
              f"{r['tokens'] / r['bare_wall']:11,.0f} {r['tokens'] / r['pipe_wall']:11,.0f} "
              f"{r['bare_wall'] / r['pipe_wall']:7.1%} {r['bare_cpu'] / r['pipe_cpu']:7.1%} "
              f"{r['manifest']['totals']['disk_bytes_per_token']:10.3f}")
    everything = results["all four (4 tasks)"]
    totals = everything["manifest"]["totals"]
    print(f"goal: pipeline >= 80% of bare per worker (wall %, CPU %: bare time / pipeline time); "
          f"<= 1.6 disk bytes/token")
    scaling(files, ranks)
    print(f"on disk: {totals['disk_bytes']:,} bytes = {totals['disk_bytes_per_token']:.3f} bytes/token "
          f"({everything['manifest']['dtype']} + zstd); UTF-8 {totals['bytes_per_token']:.3f} bytes/token")


if __name__ == "__main__":
    main()
