#!/usr/bin/env bash
# The README's test command (`make test`) runs this: start the local Slurm cluster when this machine
# can (root + apt-get), then run every test. Slurm tests skip, saying why, when the cluster is absent.
set -uo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
if [ -x slurm/local/start.sh ] || [ -f slurm/local/start.sh ]; then
  if bash slurm/local/start.sh >/tmp/mixerstack-slurm-start.log 2>&1; then
    export MIXERSTACK_SLURM=1
  else
    # The Slurm tests print this as their skip reason.
    export MIXERSTACK_SLURM_SKIP="local Slurm cluster did not start: $(tail -n 1 /tmp/mixerstack-slurm-start.log)"
    echo "note: $MIXERSTACK_SLURM_SKIP (full log: /tmp/mixerstack-slurm-start.log); Slurm tests will skip"
  fi
fi
exec .venv/bin/python -m pytest -q "$@" tests
