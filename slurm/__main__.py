"""`python -m slurm CMD ...`: train | prep | sweep | status (each a module with `main(argv) -> int`)."""
from __future__ import annotations

import importlib
import sys

COMMANDS = {"train": "slurm.train_cli", "prep": "slurm.prep", "sweep": "slurm.sweep_cli", "status": "slurm.status"}
USAGE = """usage: python -m slurm {train,prep,sweep,status} ...
  train   --config FILE [--section.key value ...] [--nodes N --gpus-per-node G --time T ...] [--dry-run] [--wait]
  prep    --input FILE... --out DIR --array N [data_prep tokenize options] [--wait]
  sweep   --grid configs/sweeps/FILE.toml [--max-parallel K] [--dry-run] [--wait] [--local]
  status  RUN_OR_SWEEP_DIR"""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        print(f"unknown command {argv[0]!r}\n{USAGE}", file=sys.stderr)
        return 2
    return int(importlib.import_module(COMMANDS[argv[0]]).main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
