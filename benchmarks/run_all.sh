#!/usr/bin/env bash
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python benchmarks/bench_analysis.py
.venv/bin/python benchmarks/bench_models.py
.venv/bin/python benchmarks/bench_mixing.py
.venv/bin/python benchmarks/bench_data_prep.py
.venv/bin/python benchmarks/bench_prep_shards.py
.venv/bin/python benchmarks/bench_paper_ctx.py
.venv/bin/python benchmarks/bench_slurm.py
.venv/bin/python benchmarks/bench_train.py
