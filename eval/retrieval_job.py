"""`python -m eval.retrieval_job [--partition P --time T --cpus-per-task C --mem M] [--wait] -- ARGS`:
`python -m eval retrieval ARGS` as one Slurm job (CPU by default; add `--gpus-per-node 1 ... -- --device cuda`).

The job is the same function a local run calls (`eval.retrieval.main`), queued through the stack's Slurm
launcher (`slurm.launch.make_executor`: requeue on preemption, logs and the sbatch script under
OUT/slurm/). The evaluation is deterministic and writes its outputs atomically, so a requeued job simply
redoes it. `--wait` blocks until the job ends: exit 0, or 1 when the job failed (its stderr log says why).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


class RetrievalJob:
    """The callable submitit pickles: runs the evaluation and fails the job on a non-zero exit."""

    def __init__(self, argv: list[str]):
        self.argv = list(argv)

    def __call__(self) -> int:
        from eval.retrieval import main

        code = main(self.argv)
        if code:
            raise SystemExit(f"eval retrieval exited with {code}; see the job's stderr log")
        return code


def _out_dir(eval_argv: list[str]) -> Path:
    if "--out" not in eval_argv or eval_argv.index("--out") + 1 >= len(eval_argv):
        raise SystemExit("usage: python -m eval.retrieval_job [launcher flags] -- --pairs DIR --out OUT ...")
    return Path(eval_argv[eval_argv.index("--out") + 1])


def main(argv: list[str] | None = None) -> int:
    from slurm import launch, options

    argv = list(sys.argv[1:] if argv is None else argv)
    ours, eval_argv = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(prog="python -m eval.retrieval_job", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    options.add_launcher_flags(parser, options.PREP_FLAGS + ("gpus_per_node",))
    parser.add_argument("--wait", action="store_true", help="block until the job ends; exit with its status")
    args = parser.parse_args(ours)
    out = _out_dir(eval_argv)
    section = options.prep_section(args)
    if args.gpus_per_node:
        section.gpus_per_node = args.gpus_per_node
    executor = launch.make_executor(section, out / "slurm", job_name="eval-retrieval")
    job = executor.submit(RetrievalJob(eval_argv))
    print(f"submitted job {job.job_id}: eval retrieval -> {out} (logs in {out / 'slurm'})")
    if not args.wait:
        return 0
    try:
        job.result()
    except Exception as exc:  # noqa: BLE001 - submitit wraps the job's failure
        print(f"job {job.job_id} failed: {exc}", file=sys.stderr)
        return 1
    print(f"job {job.job_id} done: {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
