"""`python -m slurm train --config FILE [--section.key value ...] [launcher flags] [--dry-run] [--wait]`.

Launcher flags (--nodes, --gpus-per-node, --time, ...) are written into the config's `[slurm]` section
as overrides, so the run's resolved config.toml records how it was launched and a requeued job reads
the same values.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pretrain.config import RunConfig
from slurm import jobs, launch, options
from slurm.train_task import TrainTask
from stackcore.config import ConfigError, load_config, split_config_argv


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m slurm train", allow_abbrev=False,
                                description="Submit a training run (one config file) as a Slurm job.",
                                usage="python -m slurm train --config FILE [--section.key value ...] [launcher flags]",
                                epilog="--config FILE is the run config (its [slurm] section gives the defaults); "
                                       "other --section.key value pairs override it, as in pretrain.train.")
    options.add_launcher_flags(p)
    p.add_argument("--dry-run", action="store_true", help="print the sbatch script and exit")
    p.add_argument("--wait", action="store_true", help="wait for the job; exit 1 with its traceback on failure")
    return p


def resolve(argv: list[str]) -> tuple[argparse.Namespace, list[str], RunConfig]:
    """(launcher args, the trainer's argv, the resolved config)."""
    args, rest = parser().parse_known_args(argv)
    config, overrides = split_config_argv(rest)  # the one --config / --section.key value convention
    if config is None:
        raise ConfigError("slurm train needs the run config: --config FILE.toml")
    overrides += options.flag_overrides(args)
    config = str(Path(config).resolve())
    cfg = load_config(RunConfig, config, overrides)
    return args, ["--config", config, *overrides], cfg


def run_dir_of(cfg: RunConfig) -> Path:
    return (Path(cfg.run.dir) / cfg.run.name).resolve()


def submit(train_argv: list[str], cfg: RunConfig, dry_run: bool = False):
    """Queue one training job; returns the submitit Job (or the sbatch script text when dry_run)."""
    run_dir = run_dir_of(cfg)
    folder = Path(cfg.slurm.folder) if cfg.slurm.folder else jobs.slurm_dir(run_dir)
    executor = launch.make_executor(cfg.slurm, folder, job_name=cfg.run.name)
    if dry_run:
        return launch.sbatch_script(executor)
    active = jobs.active_job(run_dir)
    if active:
        raise ConfigError(f"{run_dir} is already being trained by Slurm job {active}; wait for it, or "
                          f"`scancel {active}` first (it checkpoints), then submit again to resume")
    job = executor.submit(TrainTask(train_argv, run_dir, cfg.slurm.max_requeues))
    jobs.record(run_dir, "submitted", job_id=job.job_id, folder=str(folder))
    return job


def failure_message(job_id: str, run_dir: Path, exc: BaseException) -> str:
    """submitit's error (task 0's traceback and log tail) plus the run's failure record, which holds the
    traceback of whichever rank failed first (task 0 may only have been stopped because of it)."""
    failure = jobs.slurm_dir(run_dir) / jobs.FAILURE_FILE
    text = f"Slurm job {job_id} failed (run directory {run_dir}):\n{exc}"
    if failure.is_file():
        recorded = failure.read_text()
        if recorded.strip() and recorded.strip()[-200:] not in text:
            text += f"\n--- {failure} ---\n{recorded}"
    return text


def wait(job, run_dir: Path) -> int:
    """Blocks until the job ends; prints the failure (traceback included) and returns 1 when it failed."""
    import submitit

    try:
        job.results()
    except (submitit.core.utils.FailedJobError, submitit.core.utils.UncompletedJobError) as exc:
        print(failure_message(job.job_id, run_dir, exc), file=sys.stderr)
        return 1
    print(f"Slurm job {job.job_id} completed after {jobs.requeue_count(run_dir)} requeue(s): {run_dir}")
    return 0


def main(argv: list[str]) -> int:
    import submitit

    try:
        args, train_argv, cfg = resolve(argv)
        out = submit(train_argv, cfg, dry_run=args.dry_run)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except submitit.core.utils.FailedJobError as exc:  # sbatch refused the job (partition, account, ...)
        print(f"error: sbatch refused the job:\n{exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(out)
        return 0
    run_dir = run_dir_of(cfg)
    print(f"submitted Slurm job {out.job_id}: run directory {run_dir}, logs in {jobs.slurm_dir(run_dir)}; "
          f"watch with `python -m slurm status {run_dir}`")
    return wait(out, run_dir) if args.wait else 0
