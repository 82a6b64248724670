"""Slurm launcher costs on the local one-node cluster (slurm/local/start.sh), measured side by side:

- cluster start when already running (the cost `make test` pays every time);
- submitit round trip of a no-op job (submit -> result);
- a tiny 1-rank training run: local `python -m pretrain.train` vs `python -m slurm train --wait`;
- the same run preempted once (`scontrol requeue` mid-run): the extra wall time a requeue costs;
- data prep of the shared corpora: local `data_prep tokenize` vs `slurm prep --array 2 --wait`.

Run as root on a machine where start.sh works: `.venv/bin/python benchmarks/bench_slurm.py`.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from stackcore.paths import shared_dir  # noqa: E402

DATA = shared_dir("data")  # $MIXERSTACK_SHARED or the folder beside the repository
PY = sys.executable
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
STEPS = 20


def sh(cmd: list, **kw) -> float:
    t0 = time.perf_counter()
    subprocess.run([str(c) for c in cmd], check=True, cwd=REPO, env=ENV, capture_output=True, **kw)
    return time.perf_counter() - t0


def noop() -> int:
    return 1


def write_config(work: Path, corpus: Path, name: str, sleep: float = 0.0) -> Path:
    path = work / f"{name}.toml"
    path.write_text(f"""[run]
name = "{name}"
dir = "{work / 'runs'}"
[model]
family = "mixer"
d_model = 64
n_layers = 2
n_ctx = 32
[data]
path = "{corpus}"
val_tokens = 2048
streams = 2
[train]
steps = {STEPS}
micro_batch = 2
global_batch = 4
device = "cpu"
debug_step_sleep_s = {sleep}
[log]
eval_every = 0
[slurm]
tasks_per_node = 1
time = "00:10:00"
signal_lead_s = 30
""")
    return path


def main() -> int:
    if os.geteuid() != 0:
        print("bench_slurm: needs root (it starts the local Slurm cluster); skipped")
        return 0
    t0 = time.perf_counter()
    subprocess.run(["bash", REPO / "slurm/local/start.sh"], check=True, capture_output=True)
    first = time.perf_counter() - t0
    warm = sh(["bash", "slurm/local/start.sh"])
    print(f"start.sh: first call this session {first:.1f} s, when already running {warm:.2f} s")

    import submitit

    work = Path(tempfile.mkdtemp(prefix="bench-slurm-"))
    ex = submitit.SlurmExecutor(folder=str(work / "noop"), python=PY)
    ex.update_parameters(time=5, ntasks_per_node=1)
    t0 = time.perf_counter()
    assert ex.submit(noop).result() == 1
    print(f"submitit no-op job round trip: {time.perf_counter() - t0:.2f} s")

    corpus = work / "corpus"
    sh([PY, "-m", "data_prep", "tokenize", "--input", DATA / "tinystories/train-head.jsonl", "--tokenizer",
        DATA / "tokenizers/r50k_base.tiktoken", "--out", corpus, "--workers", "1"])
    local = sh([PY, "-m", "pretrain.train", "--config", write_config(work, corpus, "local")])
    slurm = sh([PY, "-m", "slurm", "train", "--config", write_config(work, corpus, "slurm"), "--wait"])
    print(f"tiny training, {STEPS} steps, 1 rank: local {local:.1f} s, through Slurm {slurm:.1f} s "
          f"(ratio {slurm / local:.2f}, overhead {slurm - local:+.1f} s)")

    from slurm import train_cli
    cfg = write_config(work, corpus, "requeue", sleep=0.3)
    plain = sh([PY, "-m", "slurm", "train", "--config", write_config(work, corpus, "plain-sleep", sleep=0.3), "--wait"])
    _, argv, resolved = train_cli.resolve(["--config", str(cfg)])
    t0 = time.perf_counter()
    job = train_cli.submit(argv, resolved)
    metrics = work / "runs" / "requeue" / "metrics.jsonl"
    while not metrics.exists() or len(metrics.read_text().splitlines()) < 5:
        time.sleep(0.2)
    subprocess.run(["scontrol", "requeue", job.job_id], check=True)
    job.results()
    requeued = time.perf_counter() - t0
    print(f"same run with 0.3 s/step: uninterrupted {plain:.1f} s, requeued once mid-run {requeued:.1f} s "
          f"(one requeue costs {requeued - plain:+.1f} s: checkpoint, cred_expire=10 s, restart)")

    inputs = [DATA / "tinystories/train-head.jsonl", DATA / "enwiki/enwiki-sample.parquet",
              DATA / "tinystories/valid-head.txt"]
    common = ["--input", *inputs, "--tokenizer", DATA / "tokenizers/r50k_base.tiktoken", "--task-mb", "1"]
    local_prep = sh([PY, "-m", "data_prep", "tokenize", *common, "--out", work / "prep-local", "--workers", "1"])
    array_prep = sh([PY, "-m", "slurm", "prep", "--array", "2", *common, "--out", work / "prep-array", "--wait"])
    same = (json.loads((work / "prep-local/manifest.json").read_text())["fingerprint"]
            == json.loads((work / "prep-array/manifest.json").read_text())["fingerprint"])
    print(f"prep of the shared corpora (3 tasks): local 1 worker {local_prep:.1f} s, Slurm array of 2 + "
          f"finalize {array_prep:.1f} s (ratio {array_prep / local_prep:.2f}); same fingerprint: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
