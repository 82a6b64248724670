"""`python -m sweeps --grid FILE.toml [...]`: the same command as `python -m slurm sweep`."""
from __future__ import annotations

import sys

from stackcore.errors import run_cli
from sweeps.cli import main

if __name__ == "__main__":
    sys.exit(run_cli(lambda: main(sys.argv[1:])))
