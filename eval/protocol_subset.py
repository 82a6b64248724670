"""`python -m eval.protocol_subset --config F --labels a,b --lrs 2e-3,4e-3`: trains only part of a
protocol's LR stage (seed 0), with the protocol driver's own plan, arguments and data -- a reduced
screen when the machine cannot afford the whole protocol. `--stage seeds` (no --lrs) trains the
labels' seed runs at their best LR instead (planned once their sweep finished inside its edges). Runs go one LR at a time across all labels,
so a screen cut short still compares every shape at the LRs it reached. Resumable: finished runs are
skipped. `python -m eval.protocol export --config F` then writes the CSV of the runs that finished;
a table made from it is a screen, not the protocol (fewer LRs, one seed: say so beside it)."""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from stackcore.config import ConfigError
from stackcore.errors import run_cli


def _floats(text: str, what: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--{what} {text!r}: expected comma-separated numbers, e.g. 2e-3,4e-3") from None


def subset_runs(proto, labels: list[str], lrs: list[float], stage: str = "lr") -> list:
    """The planned `stage` runs of `labels` (LR stage: at `lrs`, LR-major -- every label at one LR,
    then the next; seeds stage: every seed run planned so far, label by label)."""
    from eval.protocol import plan_runs

    known = [s.label for s in proto.shapes]
    unknown = [label for label in labels if label not in known]
    if unknown:
        raise ConfigError(f"--labels: {unknown[0]!r} is not a shape label of protocol "
                          f"{proto.protocol.name}; labels: {', '.join(known)}")
    planned = [r for r in plan_runs(proto) if r.stage == stage and r.label in labels]
    if stage == "seeds":
        return sorted(planned, key=lambda r: (labels.index(r.label), r.seed))
    missing = [lr for lr in lrs if not any(r.lr == lr for r in planned)]
    if missing:
        raise ConfigError(f"--lrs: {missing[0]:g} is not in protocol.lrs {proto.protocol.lrs}")
    chosen = [r for r in planned if r.lr in lrs]
    return sorted(chosen, key=lambda r: (lrs.index(r.lr), labels.index(r.label)))


def train_subset(proto, runs: list) -> int:
    from eval.launch import prep_corpus, run_module
    from eval.protocol import final_val_loss, shared_data, train_argv

    p = proto.protocol
    out = Path(p.runs_dir)
    data = prep_corpus([str(shared_data() / p.corpus)], out, p.vocab, p.val_fraction)
    todo = [r for r in runs if final_val_loss(out / r.name) is None]
    for i, r in enumerate(todo):
        print(f"[{p.name} subset] {len(todo) - i} runs left; {r.name}", flush=True)
        shutil.rmtree(out / r.name, ignore_errors=True)  # from scratch, as the driver does
        try:
            run_module(["pretrain.train", *train_argv(proto, r, data)], out / "logs" / f"{r.name}.log")
        except SystemExit as exc:  # a diverged run is a result (its status says failed)
            if final_val_loss(out / r.name) is None:
                raise
            print(f"  {r.name}: {exc}", flush=True)
    print(f"[{p.name} subset] {len(runs)} runs finished ({len(todo)} trained now)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.protocol_subset", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="a protocol TOML (configs/protocol/)")
    parser.add_argument("--labels", required=True, help="comma-separated shape labels, e.g. llama,mixer")
    parser.add_argument("--lrs", default="", help="comma-separated LRs out of protocol.lrs (LR stage)")
    parser.add_argument("--stage", choices=["lr", "seeds"], default="lr")
    parser.add_argument("--dry-run", action="store_true", help="list the runs and exit")
    args = parser.parse_args(argv)

    def go() -> int:
        from eval.protocol import load_protocol

        proto = load_protocol(args.config)
        labels = [label.strip() for label in args.labels.split(",") if label.strip()]
        if args.stage == "lr" and not args.lrs:
            raise ConfigError("--lrs is needed for the LR stage (e.g. --lrs 2e-3,4e-3)")
        runs = subset_runs(proto, labels, _floats(args.lrs, "lrs"), args.stage)
        if args.dry_run:
            print("\n".join(r.name for r in runs))
            return 0
        return train_subset(proto, runs)
    return run_cli(go)


if __name__ == "__main__":
    sys.exit(main())
