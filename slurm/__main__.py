"""`python -m slurm CMD ...`: train | prep | sweep | status (each a module with `main(argv) -> int`).

`sweep` is implemented by the `sweeps` package, which sits above slurm (and eval, whose planner a grid's
[match] uses); this table names it by module only, so `slurm` itself never imports it. A UserError of any
command is `error: message` and exit 2 (stackcore.errors.run_cli)."""
from __future__ import annotations

import importlib
import sys

from stackcore.errors import run_cli

COMMANDS = {"train": "slurm.train_cli", "prep": "slurm.prep", "sweep": "sweeps.cli", "status": "slurm.status"}
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
    command = importlib.import_module(COMMANDS[argv[0]])
    return run_cli(lambda: command.main(argv[1:]))


if __name__ == "__main__":
    sys.exit(main())
