#!/usr/bin/env bash
# CPU-scale results of the three analyses (issue 7): flexibility sweep, linear/near-linear mixers with
# samples, and input-representation accuracy, into docs/results/analysis/. Re-runnable: the prep and
# finished runs are skipped. About 45 min on two shared CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
PY=.venv/bin/python
# The shared data: $MIXERSTACK_SHARED, else the shared/ folder beside the repository (stackcore/paths.py).
SHARED=${MIXERSTACK_SHARED:-../shared}/data
[ -d "$SHARED" ] || { echo "error: shared data not found at $SHARED; set MIXERSTACK_SHARED=/path/to/shared" \
    "or put the shared folder beside the repository" >&2; exit 2; }
DATA=runs/data/tinystories-4k
OUT=docs/results/analysis
SWEEP=runs/sweeps/flexibility
mkdir -p "$OUT"

# 1. The shared TinyStories sample (5,511 lower-case stories), a 4,096-token BPE trained on it, 3 % held out.
[ -f "$DATA.tiktoken" ] || $PY -m data_prep train-tokenizer --input "$SHARED/tinystories/train-lower.jsonl.zst" \
    --vocab-size 4096 --out "$DATA.tiktoken"
[ -f "$DATA/manifest.json" ] || $PY -m data_prep tokenize --input "$SHARED/tinystories/train-lower.jsonl.zst" \
    --tokenizer "$DATA.tiktoken" --out "$DATA" --val-fraction 0.03

# 2. Flexibility sweep (7 runs) and the two minimal linear/near-linear mixers, locally in sequence.
$PY -m slurm sweep --grid configs/sweeps/flexibility.toml --local
$PY -m slurm sweep --grid configs/sweeps/linear-mixers.toml --local
$PY -m slurm sweep --grid configs/sweeps/flexibility-lr.toml --local
FLEX="mixer-full mixer-nonorm mixer-noresidual mixer-linear llama-full llama-nonorm llama-noresidual"
$PY -m eval flexibility $(for r in $FLEX; do echo "$SWEEP/$r"; done) --out "$OUT/flexibility"
$PY -m eval flexibility $(for r in mixer-full mixer-linear mixer-linear-min mixer-nearlinear-min; do echo "$SWEEP/$r"; done) \
    --out "$OUT/linear"
$PY -m eval flexibility $(for r in mixer-full mixer-nonorm llama-full llama-nonorm; do echo "$SWEEP/$r" "$SWEEP/$r-lr0.006"; done) \
    --out "$OUT/flexibility-lr"

# 3. Samples: greedy and temperature 0.8 from the full, linear and near-linear mixers (and Llama).
: > "$OUT/samples.txt.tmp"
for run in mixer-full mixer-linear mixer-linear-min mixer-nearlinear-min llama-full; do
  for temp in 0 0.8; do
    $PY -m pretrain.generate --run "$SWEEP/$run" --prompt "once upon a time, there was a little" \
        --max-new-tokens 48 --temperature "$temp" --top-k 50 >> "$OUT/samples.txt.tmp"
  done
done
mv "$OUT/samples.txt.tmp" "$OUT/samples.txt"

# 4. Input-representation accuracy, untrained vs trained, mixer vs Llama, after block 1 and all 4: the
# published 500-step schedule, then on at lr/10 until the L1 converged (or 1000 steps); rows are marked.
$PY -m eval representation --untrained --config "$SWEEP/mixer-full/config.toml" \
    --config "$SWEEP/llama-full/config.toml" --run "$SWEEP/mixer-full" --run "$SWEEP/llama-full" \
    --data "$DATA" --samples 4 --depths 1,4 --steps 500 --until-converged --max-steps 1000 \
    --out "$OUT/representation"
# ... Llama again at a 5x smaller step size (does a converged h depend on the step size?)
$PY -m eval representation --untrained --config "$SWEEP/llama-full/config.toml" --run "$SWEEP/llama-full" \
    --data "$DATA" --samples 4 --depths 1,4 --steps 500 --lr 0.01 --until-converged --max-steps 2000 \
    --out "$OUT/representation-lr0.01"
# ... and with the start and step size scaled to each model's embedding std (not the published protocol)
$PY -m eval representation --untrained --config "$SWEEP/mixer-full/config.toml" \
    --config "$SWEEP/llama-full/config.toml" --run "$SWEEP/mixer-full" --run "$SWEEP/llama-full" \
    --data "$DATA" --samples 4 --depths 1,4 --steps 500 --scale-to-embedding --until-converged --max-steps 1000 \
    --out "$OUT/representation-scaled"
# 5. Is h a property of the architecture or of the embedding scale? (untrained, rescaled embeddings)
$PY scripts/analysis_embedding_scale.py --data "$DATA" > "$OUT/embedding_scale.md.tmp" && \
    mv "$OUT/embedding_scale.md.tmp" "$OUT/embedding_scale.md"
echo "results in $OUT"
