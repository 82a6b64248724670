#!/usr/bin/env bash
# `make results`: every table and figure under docs/results/ that comes from committed raw data
# (docs/results/data/), recomputed without training. Deterministic: a second run leaves `git status` clean.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export OMP_NUM_THREADS=1
echo "== tuned comparison (issue 13): docs/results/protocol/"
$PY -m eval.protocol_report $(ls docs/results/data/protocol-cpu-*.csv) --out docs/results/protocol > /dev/null
echo "== IsoFLOP fits (issue 13): docs/results/isoflop.md"
$PY scripts/isoflop_results.py --report > /dev/null
if [ -f docs/results/data/protocol-cpu-sizes.csv ]; then
  echo "== IsoFLOP per family and n_ctx from the sizes protocol (issue 13, rule 6): docs/results/isoflop-sizes/"
  # total parameters: the CSV records no model options, and the non-embedding count of a Toeplitz mixer needs them
  $PY -m eval isoflop $(ls docs/results/data/protocol-cpu-*.csv | grep -v cpu-ctx) --params total --out docs/results/isoflop-sizes > /dev/null
  echo "== the sizes-and-depths tables (issue 13, rule 6): docs/results/eval.md"
  $PY -m eval.sizes_summary $(ls docs/results/data/protocol-cpu-*.csv | grep -v cpu-ctx) \
      --doc docs/results/eval.md --block sizes > /dev/null
fi
echo "== the paper's other systems (issue 11): docs/results/objectives.md"
$PY scripts/objectives_results.py --report > /dev/null
echo "== retrieval (issue 12): docs/results/retrieval.md"
$PY scripts/retrieval_results.py --report > /dev/null
echo "== improvement study (issue 15): docs/results/improvement.md"
$PY -m eval.improvement_report --config configs/protocol/improve-screen.toml \
    $( [ -f docs/results/data/improve-screen.csv ] && echo --data docs/results/data/improve-screen.csv ) \
    --doc docs/results/improvement.md > /dev/null
for study in 512 enwiki; do  # the study (issue 15) on TinyStories, then on enwiki: one table each
  if [ -f docs/results/data/improve-$study.csv ]; then
    $PY -m eval.improvement_report --config configs/protocol/improve-$study.toml \
        --data docs/results/data/improve-$study.csv --doc docs/results/improvement.md --block study-$study > /dev/null
  fi
done
echo "done: git status shows what changed (nothing, when the data did not)"
