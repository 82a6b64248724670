"""`python -m eval COMMAND ...`: each command is a module of this package with `main(argv) -> int`;
a UserError (or a missing file) of any command is `error: message` and exit 2."""
from __future__ import annotations

import importlib
import sys

from stackcore.errors import run_cli

COMMANDS = {
    "flops": ("eval.flops_cli", "params, FLOPs/token, FLOPs/step and memory of a config"),
    "match": ("eval.match", "matched-compute planner: shapes of one family closest to a reference"),
    "compare": ("eval.compare", "loss per FLOP/token/time across runs: report.md, curves.csv, plots"),
    "loss": ("eval.loss", "loss and bits per byte of a checkpoint on a prepared split"),
    "isoflop": ("eval.isoflop", "IsoFLOP parabola fits: optimum size per budget and family"),
    "representation": ("eval.representation", "input-representation accuracy (modified Hamming metric)"),
    "flexibility": ("eval.flexibility", "stability/loss table of the flexibility sweep"),
    "retrieval": ("eval.retrieval", "top-1/MRR of run embeddings vs BM25 and random on held-out pairs"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        if argv and argv[0] not in ("-h", "--help"):
            print(f"unknown command '{argv[0]}'", file=sys.stderr)
        print("usage: python -m eval COMMAND [options]\n\ncommands:")
        for name, (_, help_) in COMMANDS.items():
            print(f"  {name:<15} {help_}")
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return run_cli(lambda: module.main(argv[1:]), bad_input=(FileNotFoundError,))


if __name__ == "__main__":
    sys.exit(main())
