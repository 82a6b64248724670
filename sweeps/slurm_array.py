"""A sweep grid as one Slurm job array (`--array=0-N%K`): each element is a whole training job (its
ranks, preemption and requeue exactly as `python -m slurm train`). Resources come from the base config's
`[slurm]` section (they must agree across runs: one array, one sbatch script). Finished runs and runs
Slurm still has queued or running are left out, so resubmitting a sweep only queues what is missing.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from pretrain.config import RunConfig
from slurm import jobs, launch
from slurm.train_cli import failure_message
from slurm.train_task import TrainTask
from stackcore.atomic import atomic_write_json
from stackcore.config import ConfigError, load_config
from sweeps.grid import SWEEP_FILE, expand, is_finished, load_grid


def plan(grid_path: str | Path) -> tuple[list[dict], RunConfig]:
    """The runs still to do, each {name, run_dir, argv, cfg}; and the config whose [slurm] they share."""
    grid = load_grid(grid_path)
    todo, first = [], None
    for name, argv in expand(grid_path):
        cfg = load_config(RunConfig, argv[1], argv[2:])
        run_dir = (Path(cfg.run.dir) / cfg.run.name).resolve()
        if first is None:
            first = cfg
        elif cfg.slurm != first.slurm:
            raise ConfigError(f"{grid.path}: run {name} has a different [slurm] section than the first run; "
                              "one array needs one resource request (move slurm.* keys out of axes/variants)")
        active = jobs.active_job(run_dir)
        if active:
            print(f"sweep: {name} is already queued/running as job {active}; left as is", file=sys.stderr)
        elif not is_finished(run_dir):
            todo.append({"name": name, "run_dir": run_dir, "argv": argv, "cfg": cfg})
    if first is None:
        raise ConfigError(f"{grid.path}: the grid expands to no runs")
    return todo, first


def write_index(grid_path: str | Path, ids: dict[str, str]) -> None:
    """SWEEP_DIR/sweep.json: every run of the grid (name, run_dir, argv, job_id) for `slurm status`."""
    grid = load_grid(grid_path)
    runs = [{"name": name, "run_dir": str((grid.dir / name).resolve()), "argv": argv, "job_id": ids.get(name, "")}
            for name, argv in expand(grid_path)]
    atomic_write_json(grid.dir.resolve() / SWEEP_FILE, {"name": grid.name, "grid": str(Path(grid_path).resolve()),
                                                        "submitted": time.time(), "runs": runs})


def submit(grid_path: str | Path, max_parallel: int | None = None, dry_run: bool = False):
    """Queue the unfinished runs as one array. Returns (runs, jobs) or the sbatch text when dry_run."""
    grid = load_grid(grid_path)
    todo, first = plan(grid_path)
    executor = launch.make_executor(first.slurm, grid.dir.resolve() / "slurm", job_name=grid.name,
                                    array_parallelism=max_parallel or grid.max_parallel)
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
    write_index(grid_path, {r["name"]: j.job_id for r, j in zip(todo, submitted)})
    return todo, submitted


def wait_all(todo: list[dict], submitted: list) -> int:
    """Blocks until every submitted run ends; prints each failure. Returns the number that failed."""
    import submitit

    failed = 0
    for run, job in zip(todo, submitted):
        try:
            job.results()
        except (submitit.core.utils.FailedJobError, submitit.core.utils.UncompletedJobError) as exc:
            failed += 1
            print(f"run {run['name']}: {failure_message(job.job_id, run['run_dir'], exc)}", file=sys.stderr)
    return failed
