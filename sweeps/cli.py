"""`python -m slurm sweep --grid configs/sweeps/FILE.toml [--max-parallel K] [--dry-run] [--wait] [--local]`
(also `python -m sweeps ...`): a grid as one Slurm job array (sweeps.slurm_array), or with --local one
run after another in this process (sweeps.local)."""
from __future__ import annotations

import argparse
import sys

from stackcore.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m slurm sweep", allow_abbrev=False,
                                description="Submit a sweep grid as one Slurm job array (or run it here).")
    p.add_argument("--grid", required=True, help="sweep grid TOML (format: docs/slurm.md)")
    p.add_argument("--max-parallel", type=int, default=None, help="array tasks at once (default: the grid's)")
    p.add_argument("--dry-run", action="store_true", help="print the runs and the sbatch script, submit nothing")
    p.add_argument("--wait", action="store_true", help="wait for every run; exit 1 if any failed")
    p.add_argument("--local", action="store_true", help="no Slurm: run the unfinished runs here, one by one")
    return p


def run_here(grid: str) -> int:
    from sweeps.local import run_local

    codes = run_local(grid)
    bad = {name: rc for name, rc in codes.items() if rc}
    print(f"sweep: {len(codes) - len(bad)} runs finished" + (f", failed: {bad}" if bad else ""))
    return EXIT_FAILED if bad else EXIT_OK


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if args.local:
        return run_here(args.grid)
    import submitit

    from sweeps import slurm_array
    from sweeps.grid import load_grid

    try:
        out = slurm_array.submit(args.grid, args.max_parallel, args.dry_run)
    except submitit.core.utils.FailedJobError as exc:  # sbatch refused the array
        print(f"error: sbatch refused the job array:\n{exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.dry_run:
        print(out)
        return EXIT_OK
    todo, submitted = out
    grid = load_grid(args.grid)
    if not submitted:
        print(f"sweep {grid.name}: every run is finished; nothing submitted")
        return EXIT_OK
    print(f"sweep {grid.name}: {len(submitted)} runs as array job {submitted[0].job_id.split('_')[0]}; "
          f"watch with `python -m slurm status {grid.dir}`")
    if not args.wait:
        return EXIT_OK
    failed = slurm_array.wait_all(todo, submitted)
    print(f"sweep {grid.name}: {len(submitted) - failed} completed, {failed} failed")
    return EXIT_FAILED if failed else EXIT_OK
