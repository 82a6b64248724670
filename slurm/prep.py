"""`python -m slurm prep --input ... --out DIR --array N [data_prep tokenize options] [launcher flags]`.

The data-prep tasks (deterministic slices of the inputs, planned once by data_prep.tasks into
DIR/plan.json) run as a Slurm job array of N elements: element i runs the unfinished tasks i, i+N,
i+2N, ... A final job, queued with `--dependency=afterok` on the whole array, writes DIR/manifest.json
(`data_prep finalize`). Rerunning the same command skips completed tasks (their markers) and only
queues what is missing; the shards are byte-identical to a local `python -m data_prep tokenize`.
Job ids go to DIR/slurm/jobs.jsonl, logs to DIR/slurm/.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from data_prep.config import parse_prep_args
from data_prep.tasks import PLAN_NAME, PrepError, finalize, pending_tasks, plan_from_config, run_task
from slurm import jobs, launch, options
from stackcore.config import ConfigError


class PrepArrayTask:
    """One array element: the unfinished tasks of the plan whose index is `element` modulo `n`."""

    def __init__(self, out_dir: str, indices: list[int]):
        self.out_dir, self.indices = out_dir, list(indices)

    def __call__(self) -> list[int]:
        for index in self.indices:
            run_task(self.out_dir, index)  # idempotent: a task with a marker returns at once
        return self.indices


class FinalizeTask:
    def __init__(self, out_dir: str):
        self.out_dir = out_dir

    def __call__(self) -> dict:
        manifest = finalize(self.out_dir)
        return {"shards": len(manifest["shards"]), "tokens": manifest["totals"]["tokens"]}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m slurm prep", allow_abbrev=False,
                                description="Run data_prep tokenize as a Slurm job array, then finalize.",
                                epilog="Other options (--input, --out, --tokenizer, --val-fraction, ...) are "
                                       "those of `python -m data_prep tokenize`.")
    p.add_argument("--array", type=int, required=True, help="array elements (tasks are dealt round-robin)")
    p.add_argument("--max-parallel", type=int, default=None, help="elements running at once (default: all)")
    options.add_launcher_flags(p, options.PREP_FLAGS)
    p.add_argument("--dry-run", action="store_true", help="plan, print the array's sbatch script, submit nothing")
    p.add_argument("--wait", action="store_true", help="wait for the array and the manifest")
    return p


def deal(pending: list[int], n: int) -> list[list[int]]:
    """Round-robin: element i gets pending[i::n]; empty elements are dropped."""
    return [chunk for chunk in (pending[i::n] for i in range(n)) if chunk]


def submit(argv: list[str]):
    """Plan (or resume the plan), queue the array and the finalize job. Returns (array jobs, finalize job);
    with --dry-run, the sbatch script text; when nothing is pending, finalizes here and returns ([], None)."""
    args, rest = parser().parse_known_args(argv)
    if args.array < 1:
        raise ConfigError(f"--array must be >= 1, got {args.array}")
    cfg = parse_prep_args(rest)
    out = Path(cfg.out).resolve() if cfg.out else None
    if out is None:
        raise ConfigError("no output directory: pass --out DIR")
    cfg.out = str(out)
    cfg.resume = cfg.resume or (out / PLAN_NAME).is_file()  # rerunning the command continues the prep
    cfg.input = [str(Path(p).resolve()) if Path(p).exists() else p for p in cfg.input]
    plan_from_config(cfg)
    pending = pending_tasks(out)
    chunks = deal(pending, args.array)
    section = options.prep_section(args)
    executor = launch.make_executor(section, jobs.slurm_dir(out), job_name=f"prep-{out.name}",
                                    array_parallelism=args.max_parallel or max(1, len(chunks)))
    if args.dry_run:
        return launch.sbatch_script(executor, array_size=max(1, len(chunks)))
    if not chunks:
        if not (out / "manifest.json").is_file():
            finalize(out)
        return [], None
    with executor.batch():
        array = [executor.submit(PrepArrayTask(str(out), chunk)) for chunk in chunks]
    array_id = array[0].job_id.split("_")[0]
    jobs.record(out, "submitted", job_id=array_id, kind="prep-array", elements=len(array), tasks=len(pending))
    final_ex = launch.make_executor(section, jobs.slurm_dir(out), job_name=f"prep-finalize-{out.name}")
    final_ex.update_parameters(dependency=f"afterok:{array_id}")
    final = final_ex.submit(FinalizeTask(str(out)))
    jobs.record(out, "submitted", job_id=final.job_id, kind="prep-finalize")
    return array, final


def main(argv: list[str]) -> int:
    import submitit

    try:
        result = submit(argv)
    except (ValueError, PrepError, OSError) as exc:  # config, input, tokenizer errors name the file and fix
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except submitit.core.utils.FailedJobError as exc:  # sbatch refused the array
        print(f"error: sbatch refused the job:\n{exc}", file=sys.stderr)
        return 2
    if isinstance(result, str):
        print(result)
        return 0
    array, final = result
    if final is None:
        print("every prep task is already done; manifest written")
        return 0
    print(f"prep: {len(array)} array elements (job {array[0].job_id.split('_')[0]}), finalize job {final.job_id}")
    if "--wait" not in argv:
        return 0
    try:
        for job in array:
            job.results()
        print(f"manifest: {final.result()}")
    except (submitit.core.utils.FailedJobError, submitit.core.utils.UncompletedJobError) as exc:
        print(f"prep failed:\n{exc}", file=sys.stderr)
        return 1
    return 0
