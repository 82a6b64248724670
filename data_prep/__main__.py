"""`python -m data_prep CMD ...`

    tokenize  [--config FILE] --input PATH_OR_GLOB... --tokenizer NAME_OR_FILE --out DIR [--workers N]
              [--val-fraction F] [--text-column text] [--shard-tokens T] [--on-error raise|skip] [--resume]
    plan      (same options as tokenize): write DIR/plan.json only and print the task count (Slurm arrays)
    run-task  DIR INDEX [INDEX ...]: run planned tasks by index (what one Slurm array element does)
    finalize  DIR: write DIR/manifest.json once every task is done
    verify    DIR [--workers N]: re-read every shard against the manifest; non-zero exit naming each bad one
    stats     DIR: tokens, documents, length percentiles, bytes per token
    train-tokenizer --input ... --vocab-size V --out FILE.tiktoken [--max-bytes B] [--text-column text]
    pairs     --input ... --tokenizer T --out DIR [--query SPEC --passage SPEC]: (query, passage) pair shards
              for retrieval; SPEC = field:NAME | first-sentence | lead (query), field:NAME | rest (passage)
"""
from __future__ import annotations

import json
import signal
import sys
import time

from stackcore.errors import run_cli

USAGE = __doc__


def _bad_input() -> tuple[type[BaseException], ...]:
    """data_prep's own user errors that do not derive from UserError yet, and a missing path argument:
    all are bad input (exit 2), not a crash."""
    from data_prep.readers import InputError
    from data_prep.tasks import PrepError

    return (InputError, PrepError, FileNotFoundError)


def cmd_tokenize(argv: list[str], plan_only: bool = False) -> int:
    from data_prep.config import parse_prep_args
    from data_prep.pool import run_tasks
    from data_prep.report import summary
    from data_prep.tasks import finalize, pending_tasks, plan_from_config

    cfg = parse_prep_args(argv)
    started = time.perf_counter()
    plan = plan_from_config(cfg)
    todo = pending_tasks(cfg.out)
    if plan_only:
        print(f"{cfg.out}: {len(plan['tasks'])} tasks planned, {len(todo)} unfinished; run them with "
              f"`python -m data_prep run-task {cfg.out} INDEX` (or `python -m slurm prep`), then "
              f"`python -m data_prep finalize {cfg.out}`")
        return 0
    done = len(plan["tasks"]) - len(todo)
    if done:
        print(f"resuming: {done} of {len(plan['tasks'])} tasks already done", file=sys.stderr)
    if todo:
        # SIGTERM (a scheduler's time limit, `kill`): unwind like Ctrl-C, so the pool's workers are stopped
        # too; finished tasks keep their markers and `--resume` continues from there.
        signal.signal(signal.SIGTERM, _terminate)
        run_tasks(cfg.out, todo, cfg.n_workers(), show_progress=cfg.progress)
    manifest = finalize(cfg.out)
    # throughput only when this call did all the work (a resumed run's figure would mislead)
    print(summary(manifest, cfg.out, time.perf_counter() - started if not done else None))
    return 0


def _terminate(signum, frame) -> None:
    raise SystemExit(128 + signum)


def cmd_run_task(argv: list[str]) -> int:
    from data_prep.tasks import run_task

    if len(argv) < 2 or not all(index.isdigit() for index in argv[1:]):
        print("usage: python -m data_prep run-task DIR INDEX [INDEX ...]  (INDEX: a task number)", file=sys.stderr)
        return 2
    for index in argv[1:]:
        record = run_task(argv[0], int(index))
        print(f"task {record['index']}: {record['input']['written']:,} documents, "
              f"{sum(s['tokens'] for s in record['shards']):,} tokens, {len(record['shards'])} shards")
    return 0


def cmd_finalize(argv: list[str]) -> int:
    from data_prep.report import summary
    from data_prep.tasks import finalize

    if len(argv) != 1:
        print("usage: python -m data_prep finalize DIR", file=sys.stderr)
        return 2
    print(summary(finalize(argv[0]), argv[0]))
    return 0


def cmd_verify(argv: list[str]) -> int:
    from data_prep.format import read_manifest
    from data_prep.inspect_shards import verify

    workers = 1
    if "--workers" in argv:
        at = argv.index("--workers")
        workers = int(argv[at + 1]) if at + 1 < len(argv) and argv[at + 1].isdigit() else 0
        argv = argv[:at] + argv[at + 2:]
    if len(argv) != 1 or workers < 1:
        print("usage: python -m data_prep verify DIR [--workers N]", file=sys.stderr)
        return 2
    problems = verify(argv[0], workers)
    for problem in problems:
        print(f"BAD {problem}", file=sys.stderr)
    manifest = read_manifest(argv[0])
    if problems:
        print(f"{argv[0]}: {len(problems)} problem(s) in {len(manifest['shards'])} shards; re-run the "
              "tasks of the bad shards (delete them and their tasks/ markers, then tokenize --resume)",
              file=sys.stderr)
        return 1
    print(f"{argv[0]}: {len(manifest['shards'])} shards OK ({manifest['totals']['documents']:,} documents, "
          f"{manifest['totals']['tokens']:,} tokens)")
    return 0


def cmd_stats(argv: list[str]) -> int:
    from data_prep.inspect_shards import stats
    from data_prep.report import table

    as_json = "--json" in argv
    argv = [a for a in argv if a != "--json"]
    if len(argv) != 1:
        print("usage: python -m data_prep stats DIR [--json]", file=sys.stderr)
        return 2
    result = stats(argv[0])
    if as_json:
        print(json.dumps(result, indent=2))
        return 0
    keys = ["documents", "tokens", "p1", "p10", "p50", "p90", "p99", "max_length", "utf8_bytes_per_token",
            "disk_bytes_per_token"]
    rows = [[split, *[f"{s[k]:,}" if isinstance(s[k], int) else str(s[k]) for k in keys]]
            for split, s in result["splits"].items()]
    print(f"{argv[0]}: tokenizer {result['tokenizer']} (vocab {result['vocab_size']:,}, {result['dtype']}); "
          "document lengths in tokens (EOS included)")
    print(table(["split", *keys], rows))
    return 0


def cmd_train_tokenizer(argv: list[str]) -> int:
    from data_prep.train_tokenizer import main as train_main

    return train_main(argv)


COMMANDS = {"tokenize": cmd_tokenize, "plan": lambda a: cmd_tokenize(a, plan_only=True),
            "run-task": cmd_run_task, "finalize": cmd_finalize, "verify": cmd_verify, "stats": cmd_stats,
            "train-tokenizer": cmd_train_tokenizer,
            "pairs": lambda a: __import__("data_prep.pairs", fromlist=["main"]).main(a)}  # data_prep/pairs.py


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else 2
    command = COMMANDS.get(argv[0])
    if command is None:
        import difflib

        close = difflib.get_close_matches(argv[0], list(COMMANDS), n=1)
        print(f"unknown command {argv[0]!r}" + (f"; did you mean {close[0]!r}?" if close else "") +
              f"\n{USAGE}", file=sys.stderr)
        return 2
    return run_cli(lambda: command(argv[1:]), bad_input=_bad_input())


if __name__ == "__main__":
    sys.exit(main())
