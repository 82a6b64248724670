"""`python -m slurm sweep --grid configs/sweeps/FILE.toml [--max-parallel K] [--dry-run] [--wait] [--local]`.

The grid's runs become one Slurm job array (`--array=0-N%K`); each element is a whole training job
(its ranks, preemption and requeue exactly as `python -m slurm train`). Resources come from the base
config's `[slurm]` section (they must agree across runs: one array, one sbatch script). Finished runs
are left out, so resubmitting a sweep only queues what is missing.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from data_prep.format import atomic_write_json
from pretrain.config import RunConfig
from slurm import jobs, launch
from slurm.sweep import SWEEP_FILE, expand, is_finished, load_grid
from slurm.train_cli import failure_message
from slurm.train_task import TrainTask
from stackcore.config import ConfigError, load_config


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m slurm sweep", allow_abbrev=False,
                                description="Submit a sweep grid as one Slurm job array.")
    p.add_argument("--grid", required=True, help="sweep grid TOML (format: docs/slurm.md)")
    p.add_argument("--max-parallel", type=int, default=None, help="array tasks at once (default: the grid's)")
    p.add_argument("--dry-run", action="store_true", help="print the runs and the sbatch script, submit nothing")
    p.add_argument("--wait", action="store_true", help="wait for every run; exit 1 if any failed")
    p.add_argument("--local", action="store_true", help="no Slurm: run the unfinished runs here, one by one")
    return p


def plan(grid_path: str | Path) -> tuple[list[dict], RunConfig]:
    """The runs still to do, each {name, run_dir, argv, cfg}; and the [slurm] section they share."""
    grid = load_grid(grid_path)
    todo, section = [], None
    for name, argv in expand(grid_path):
        cfg = load_config(RunConfig, argv[1], argv[2:])
        run_dir = (Path(cfg.run.dir) / cfg.run.name).resolve()
        if section is None:
            section = cfg
        elif cfg.slurm != section.slurm:
            raise ConfigError(f"{grid.path}: run {name} has a different [slurm] section than the first run; "
                              "one array needs one resource request (move slurm.* keys out of axes/variants)")
        if jobs.active_job(run_dir):
            print(f"sweep: {name} is already queued/running as job {jobs.active_job(run_dir)}; left as is",
                  file=sys.stderr)
        elif not is_finished(run_dir):
            todo.append({"name": name, "run_dir": run_dir, "argv": argv, "cfg": cfg})
    if section is None:
        raise ConfigError(f"{grid.path}: the grid expands to no runs")
    return todo, section


def submit(grid_path: str | Path, max_parallel: int | None = None, dry_run: bool = False):
    """Queue the unfinished runs as one array. Returns (runs, jobs) or the sbatch text when dry_run."""
    grid = load_grid(grid_path)
    todo, first = plan(grid_path)
    sweep_dir = grid.dir.resolve()
    parallel = max_parallel or grid.max_parallel
    executor = launch.make_executor(first.slurm, sweep_dir / "slurm", job_name=grid.name, array_parallelism=parallel)
    if dry_run:
        listing = "\n".join(f"# {r['name']}: pretrain.train {' '.join(r['argv'])}" for r in todo)
        return listing + "\n" + launch.sbatch_script(executor, array_size=max(1, len(todo)))
    submitted = []
    if todo:
        with executor.batch():
            for run in todo:
                submitted.append(executor.submit(TrainTask(run["argv"], run["run_dir"], run["cfg"].slurm.max_requeues)))
    for run, job in zip(todo, submitted):
        jobs.record(run["run_dir"], "submitted", job_id=job.job_id, sweep=grid.name)
    all_runs = [{"name": name, "run_dir": str((grid.dir / name).resolve()), "argv": argv}
                for name, argv in expand(grid_path)]
    ids = {r["name"]: j.job_id for r, j in zip(todo, submitted)}
    for run in all_runs:
        run["job_id"] = ids.get(run["name"], "")
    atomic_write_json(sweep_dir / SWEEP_FILE, {"name": grid.name, "grid": str(Path(grid_path).resolve()),
                                               "submitted": time.time(), "runs": all_runs})
    return todo, submitted


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if args.local:
        from slurm.sweep import run_local

        codes = run_local(args.grid)
        bad = {name: rc for name, rc in codes.items() if rc}
        print(f"sweep: {len(codes) - len(bad)} runs finished" + (f", failed: {bad}" if bad else ""))
        return 1 if bad else 0
    import submitit

    try:
        out = submit(args.grid, args.max_parallel, args.dry_run)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except submitit.core.utils.FailedJobError as exc:  # sbatch refused the array
        print(f"error: sbatch refused the job array:\n{exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(out)
        return 0
    todo, submitted = out
    grid = load_grid(args.grid)
    if not submitted:
        print(f"sweep {grid.name}: every run is finished; nothing submitted")
        return 0
    print(f"sweep {grid.name}: {len(submitted)} runs as array job {submitted[0].job_id.split('_')[0]}; "
          f"watch with `python -m slurm status {grid.dir}`")
    if not args.wait:
        return 0
    import submitit

    failed = 0
    for run, job in zip(todo, submitted):
        try:
            job.results()
        except (submitit.core.utils.FailedJobError, submitit.core.utils.UncompletedJobError) as exc:
            failed += 1
            print(f"run {run['name']}: {failure_message(job.job_id, run['run_dir'], exc)}", file=sys.stderr)
    print(f"sweep {grid.name}: {len(submitted) - failed} completed, {failed} failed")
    return 1 if failed else 0
