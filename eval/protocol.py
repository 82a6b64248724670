"""`python -m eval.protocol plan|run|export --config configs/protocol/NAME.toml`: the tuned comparison.

The protocol (docs/protocol.md): for every family shape and n_ctx, a learning-rate sweep at seed 0
(stage "lr"); each family's best LR is the one with the lowest final validation loss, and a best LR at an
edge of the sweep extends the sweep by one factor-2 step beyond that edge (up to MAX_EXTENSIONS times);
then the other seeds at the best LR (stage "seeds"). Every run trains to the same dense FLOP budget on
the same data and validation set. `export` writes one CSV row per logged validation point of every run
(the committed raw data; `python -m eval.protocol_report` recomputes tables and plots from it alone).
"""
from __future__ import annotations

import argparse
import csv
import io
import math
import os
import shutil
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stackcore.atomic import atomic_write_text
from stackcore.config import ConfigError, load_config
from stackcore.errors import run_cli
from stackcore import rundir

REPO = Path(__file__).resolve().parents[1]
MAX_EXTENSIONS = 4
CSV_FIELDS = ("protocol", "stage", "label", "family", "n_ctx", "lr", "seed", "d_model", "n_layers", "heads",
              "params", "flops_per_token", "useful_flops_per_token", "step", "tokens", "flops", "flops_useful",
              "wall_s", "train_loss", "val_loss", "val_bpb", "budget_flops", "hardware", "run")


@dataclass
class Shape:
    label: str = ""
    family: str = ""
    d_model: int = 0
    n_layers: int = 0
    heads: int = 1
    match: str = ""  # a fixed shape's label: pick the shape closest in dense FLOPs/token to it
    layers: list[int] = field(default_factory=list)  # with match: the depths searched (default 1..2x)
    options: dict[str, Any] = field(default_factory=dict)  # further [model] keys, e.g. {mixing = "toeplitz"}
    # this shape's LR sweep (>= 5 values; default protocol.lrs): a small shape whose best LR is known to lie
    # above the shared sweep starts there instead of reaching it by edge extensions one run at a time
    lrs: list[float] = field(default_factory=list)


@dataclass
class ProtocolSection:
    name: str = ""
    corpus: str = ""
    vocab: int = 2048
    val_fraction: float = 0.05
    val_tokens: int = 33000
    tokens_per_step: int = 2048
    budget_flops: float = 3e12
    evals: int = 6
    warmup_fraction: float = 0.05
    lrs: list[float] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    n_ctx: list[int] = field(default_factory=list)
    runs_dir: str = "runs/protocol"
    data: str = ""
    hardware: str = ""
    est_flops_per_s: float = 0.0  # sustained FLOP/s of the target hardware, for the plan's hour estimate
    # per-n_ctx settings (TOML keys are strings): global batch in sequences (default tokens_per_step / n_ctx)
    # and data mode ("packed" default; the paper pads one document per sequence at 512)
    batch: dict[str, int] = field(default_factory=dict)
    data_mode: dict[str, str] = field(default_factory=dict)
    micro_batch: int = 0  # sequences per rank per forward; 0 = the whole global batch
    max_steps: int = 0  # a step cap; 0 = none. The plan refuses a cap that would cut a run's budget
    train: dict[str, Any] = field(default_factory=dict)  # extra dotted overrides, e.g. {"train.precision" = "bf16"}


@dataclass
class Protocol:
    protocol: ProtocolSection = field(default_factory=ProtocolSection)
    shapes: list[Shape] = field(default_factory=list)


def load_protocol(path: str | Path) -> Protocol:
    proto = load_config(Protocol, path)
    p = proto.protocol
    if len(p.lrs) < 5 or not p.n_ctx or not proto.shapes:
        raise ConfigError(f"{path}: a protocol needs >= 5 learning rates (protocol.lrs), >= 1 n_ctx and >= 1 [[shapes]]")
    labels = {s.label for s in proto.shapes}
    for s in proto.shapes:
        if s.lrs and len(s.lrs) < 5:
            raise ConfigError(f"{path}: shape {s.label!r} sets lrs {s.lrs}: a sweep needs >= 5 learning rates")
        if s.match and s.match not in labels:
            raise ConfigError(f"{path}: shape {s.label!r} matches {s.match!r}, which is not a shape label {sorted(labels)}")
    return proto


def model_config(proto: Protocol, shape: Shape, n_ctx: int):
    """The ModelConfig of one shape at one n_ctx (matched shapes through eval.match.plan)."""
    from eval.match import plan
    from pretrain.config import ModelConfig

    if not shape.match:
        cfg = ModelConfig(family=shape.family, d_model=shape.d_model, n_layers=shape.n_layers, n_ctx=n_ctx,
                          vocab_size=proto.protocol.vocab, heads=shape.heads, **shape.options)
        cfg.validate()
        return cfg
    ref = next(s for s in proto.shapes if s.label == shape.match)
    found = plan(model_config(proto, ref, n_ctx), shape.family, "flops", top=1, heads=[shape.heads],
                 options=shape.options, layers=shape.layers or None)
    if not found:
        raise ConfigError(f"shape {shape.label!r}: no {shape.family} shape with {shape.options} matches "
                          f"{shape.match!r} at n_ctx {n_ctx}")
    return found[0]["config"]


def run_name(label: str, cfg, lr: float, seed: int) -> str:
    return f"{label}-d{cfg.d_model}x{cfg.n_layers}h{cfg.heads}-ctx{cfg.n_ctx}-lr{lr:g}-s{seed}"


def final_val_loss(run_dir: Path) -> float | None:
    """The last validation loss of a completed run; inf for a run that failed (diverged: the non-finite
    guard stopped it) -- a worse result, not a missing one; None while the run has not finished."""
    status = rundir.read_status(run_dir) if run_dir.is_dir() else None
    if status and status.get("state") == "failed":
        return math.inf
    if not status or status.get("state") != "completed":
        return None
    losses = [r["val_loss"] for r in rundir.read_metrics(run_dir) if r.get("val_loss") is not None]
    return losses[-1] if losses and math.isfinite(losses[-1]) else math.inf


def best_lr(results: dict[float, float | None]) -> tuple[float | None, str]:
    """(best LR, where): where = "inside" | "low edge" | "high edge" | "missing" (a run not finished)."""
    if not results or any(v is None for v in results.values()):
        return None, "missing"
    if not any(math.isfinite(v) for v in results.values()):
        return None, "all diverged"
    lrs = sorted(results)
    best = min(lrs, key=lambda lr: results[lr])
    if best == lrs[0]:
        return best, "low edge"
    if best == lrs[-1]:
        return best, "high edge"
    return best, "inside"


@dataclass
class PlannedRun:
    stage: str
    label: str
    cfg: Any
    lr: float
    seed: int

    @property
    def name(self) -> str:
        return run_name(self.label, self.cfg, self.lr, self.seed)


def lr_grid(proto: Protocol, label: str, n_ctx: int, runs: Path) -> tuple[list[float], float | None, str]:
    """The LRs of one (shape, n_ctx) after edge extensions, its best LR and where the best lies.
    An extension is planned only once the runs before it finished (the decision needs their losses)."""
    shape = next(s for s in proto.shapes if s.label == label)
    cfg = model_config(proto, shape, n_ctx)
    lrs = sorted(shape.lrs or proto.protocol.lrs)
    most = len(lrs) + MAX_EXTENSIONS
    seed = proto.protocol.seeds[0]
    for _ in range(MAX_EXTENSIONS + 1):
        results = {lr: final_val_loss(runs / run_name(label, cfg, lr, seed)) for lr in lrs}
        best, where = best_lr(results)
        if where == "low edge" and len(lrs) < most:
            lrs = [lrs[0] / 2] + lrs
        elif where == "high edge" and len(lrs) < most:
            lrs = lrs + [lrs[-1] * 2]
        else:
            return lrs, best, where
    return lrs, best, where


def plan_runs(proto: Protocol) -> list[PlannedRun]:
    """Every run the protocol needs given what has finished so far: the LR stage (with extensions),
    then the seeds at each best LR once it is known."""
    runs = Path(proto.protocol.runs_dir)
    seed0, out = proto.protocol.seeds[0], []
    for n_ctx in proto.protocol.n_ctx:
        for shape in proto.shapes:
            cfg = model_config(proto, shape, n_ctx)
            lrs, best, where = lr_grid(proto, shape.label, n_ctx, runs)
            out += [PlannedRun("lr", shape.label, cfg, lr, seed0) for lr in lrs]
            if best is not None and where in ("inside", "low edge", "high edge"):
                out += [PlannedRun("seeds", shape.label, cfg, best, s) for s in proto.protocol.seeds[1:]]
    return out


def batch_for(proto: Protocol, n_ctx: int) -> int:
    p = proto.protocol
    return int(p.batch.get(str(n_ctx), max(1, p.tokens_per_step // n_ctx)))


def steps_for(proto: Protocol, cfg) -> int:
    """Optimizer steps to reach the budget (the trainer stops at the budget; this is the step cap)."""
    from pretrain.models.flops import training_flops_per_token
    tokens_per_step = batch_for(proto, cfg.n_ctx) * cfg.n_ctx
    return int(proto.protocol.budget_flops / (training_flops_per_token(cfg) * tokens_per_step)) + 1


def shape_options(proto: Protocol, label: str) -> list[str]:
    return sorted(next(s for s in proto.shapes if s.label == label).options)


def train_argv(proto: Protocol, r: PlannedRun, data: Path) -> list[str]:
    """`pretrain.train` arguments of one planned run: budget-stopped, warmup 5%, ~`evals` validations."""
    p, cfg = proto.protocol, r.cfg
    steps, batch = steps_for(proto, cfg), batch_for(proto, cfg.n_ctx)
    if p.max_steps and steps > p.max_steps:
        raise ConfigError(f"protocol {p.name}: {r.name} needs {steps} steps to reach its budget but "
                          f"protocol.max_steps = {p.max_steps} would cut it; raise the cap or lower the budget")
    args = ["--run.name", r.name, "--run.dir", p.runs_dir, "--run.seed", str(r.seed), "--data.path", str(data),
            "--data.val_tokens", str(p.val_tokens), "--train.budget_flops", repr(float(p.budget_flops)),
            "--train.steps", str(steps + 10), "--train.micro_batch", str(p.micro_batch or batch),
            "--train.global_batch", str(batch), "--train.lr", repr(r.lr),
            "--train.warmup", str(max(1, int(steps * p.warmup_fraction))), "--log.every", "5",
            "--log.eval_every", str(max(1, steps // p.evals)), "--checkpoint.resume", "none"]
    if str(cfg.n_ctx) in p.data_mode:
        args += ["--data.mode", p.data_mode[str(cfg.n_ctx)]]
    for key in ("family", "d_model", "n_layers", "n_ctx", "vocab_size", "heads", *shape_options(proto, r.label)):
        value = getattr(cfg, key)
        args += [f"--model.{key}", str(value).lower() if isinstance(value, bool) else str(value)]
    for key, value in p.train.items():
        args += [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]
    return args


def shared_data() -> Path:
    root = Path(os.environ.get("MIXERSTACK_SHARED") or Path(__file__).resolve().parents[2] / "shared")
    if not (root / "data").is_dir():
        raise ConfigError(f"shared data not found at {root}/data; set MIXERSTACK_SHARED to the shared folder "
                          "(the one holding data/) or put it beside the repository as ../shared")
    return root / "data"


def print_plan(proto: Protocol) -> list[PlannedRun]:
    from pretrain.models.flops import param_counts, training_flops_per_token
    p, runs = proto.protocol, plan_runs(proto)
    print(f"protocol {p.name}: {len(runs)} runs known now ({sum(r.stage == 'lr' for r in runs)} LR-sweep, "
          f"{sum(r.stage == 'seeds' for r in runs)} seed runs; seed runs appear once the LR sweep of their "
          f"group finished); budget {p.budget_flops:.3g} dense FLOPs each")
    print(f"{'run':<48}{'stage':>6}{'params':>11}{'FLOPs/tok':>11}{'batch':>6}{'steps':>8}  done")
    for r in runs:
        done = final_val_loss(Path(p.runs_dir) / r.name)
        print(f"{r.name:<48}{r.stage:>6}{param_counts(r.cfg)['total']:>11,}{training_flops_per_token(r.cfg):>11.3g}"
              f"{batch_for(proto, r.cfg.n_ctx):>6}{steps_for(proto, r.cfg):>8}  "
              f"{'-' if done is None else f'{done:.4f}'}")
    full = len(p.n_ctx) * sum(len(s.lrs or p.lrs) + len(p.seeds) - 1 for s in proto.shapes)
    total = full * p.budget_flops
    hours = f", about {total / p.est_flops_per_s / 3600:.3g} hours at {p.est_flops_per_s:.3g} FLOP/s" \
        if p.est_flops_per_s else ""
    print(f"without extensions the protocol is {full} runs, {total:.3g} training FLOPs{hours}")
    return runs


def in_shard(name: str, shard: tuple[int, int]) -> bool:
    """Whether run `name` belongs to worker k of n (a stable hash: every worker agrees without talking)."""
    k, n = shard
    return zlib.crc32(name.encode()) % n == k


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim(out: Path, name: str, fresh_s: float = 60.0) -> Path | None:
    """The lock file of run `name`, created exclusively; None while another live worker holds it. Two
    workers on one plan (a shard started twice, a second unsharded `run`) would otherwise both train one
    run, and the second's fresh start deletes the first's directory under it. A lock whose process has
    died is stale and taken over (an empty one only after fresh_s: its writer may be between open and write)."""
    lock = out / "locks" / f"{name}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                text, age = lock.read_text().strip(), time.time() - lock.stat().st_mtime
            except OSError:  # released between our open and read: try again
                continue
            if (text.isdigit() and pid_alive(int(text))) or (not text and age < fresh_s):
                return None
            lock.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(str(os.getpid()))
        return lock
    return None


def run_all(proto: Protocol, shard: tuple[int, int] = (0, 1), wait_s: float = 30.0) -> int:
    """Trains every planned run that has not finished, one child process each, re-planning after each
    run (extensions and seed runs depend on finished results); resumable (finished runs are skipped).
    Each run is claimed by a lock file first (`claim`), so a worker started twice cannot train a run twice.
    With shard (k, n), n workers share the plan: this one trains the runs its hash picks and waits while
    only other workers' runs are left (seed runs appear only when a whole sweep has finished)."""
    from eval.launch import prep_corpus, run_module
    p = proto.protocol
    out = Path(p.runs_dir)
    while (prep_lock := claim(out, "prepare-data")) is None:
        time.sleep(5)  # another worker is tokenizing the corpus; then it is reused, not redone
    try:
        data = prep_corpus([str(shared_data() / p.corpus)], out, p.vocab, p.val_fraction)
    finally:
        prep_lock.unlink(missing_ok=True)
    trained = 0
    while True:
        todo = [r for r in plan_runs(proto) if final_val_loss(out / r.name) is None]
        if not todo:
            break
        mine = (r for r in todo if in_shard(r.name, shard))
        r, lock = next(((r, lock) for r in mine if (lock := claim(out, r.name))), (None, None))
        if r is None:
            time.sleep(wait_s)  # another worker's runs decide what comes next
            continue
        print(f"[{p.name}] {len(todo)} runs left; {r.name}", flush=True)
        try:
            if final_val_loss(out / r.name) is not None:  # finished by another worker since we planned
                continue
            shutil.rmtree(out / r.name, ignore_errors=True)  # from scratch: a stale partial run would mix in
            run_module(["pretrain.train", *train_argv(proto, r, data)], out / "logs" / f"{r.name}.log")
        except SystemExit as exc:  # a failed (diverged) run is a result: its status says failed
            if final_val_loss(out / r.name) is None:
                raise
            print(f"  {r.name}: {exc}", flush=True)
        finally:
            lock.unlink(missing_ok=True)
        trained += 1
    print(f"[{p.name}] all runs finished ({trained} trained now)")
    return 0


def export_rows(proto: Protocol) -> list[dict[str, Any]]:
    """One row per logged validation point of every finished run (the committed raw data)."""
    from pretrain.models.flops import param_counts, training_flops_per_token
    p, rows = proto.protocol, []
    for r in plan_runs(proto):
        run_dir = Path(p.runs_dir) / r.name
        if final_val_loss(run_dir) is None:
            continue
        dense, useful = training_flops_per_token(r.cfg), training_flops_per_token(r.cfg, useful=True)
        for m in rundir.read_metrics(run_dir):
            if m.get("val_loss") is None:
                continue
            rows.append({"protocol": p.name, "stage": r.stage, "label": r.label, "family": r.cfg.family,
                         "n_ctx": r.cfg.n_ctx, "lr": r.lr, "seed": r.seed, "d_model": r.cfg.d_model,
                         "n_layers": r.cfg.n_layers, "heads": r.cfg.heads, "params": param_counts(r.cfg)["total"],
                         "flops_per_token": dense, "useful_flops_per_token": useful, "step": m["step"],
                         "tokens": m["tokens"], "flops": m["flops"], "flops_useful": m["flops"] * useful / dense,
                         "wall_s": m.get("wall_s"), "train_loss": m.get("train_loss"), "val_loss": m["val_loss"],
                         "val_bpb": m.get("val_bpb"), "budget_flops": p.budget_flops, "hardware": p.hardware,
                         "run": r.name})
    return rows


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in CSV_FIELDS})
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, buf.getvalue())


def write_grid(proto: Protocol, out: Path) -> Path:
    """A `python -m slurm sweep` grid (one variant per planned run that has not finished yet) for
    clusters: submit it, wait, and run `grid` again -- the seed runs and LR extensions appear once the LR
    sweep they depend on has finished."""
    p = proto.protocol
    data = Path(p.train.get("data.path", p.runs_dir + "/data"))
    todo = [r for r in plan_runs(proto) if final_val_loss(Path(p.runs_dir) / r.name) is None]
    lines = [f"# generated by `python -m eval.protocol grid --config ...` for protocol {p.name}: {len(todo)} runs",
             "[sweep]", f'name = "{p.name}"', 'base = "../../configs/runs/tiny-llama.toml"',
             f'dir = "{p.runs_dir}"', 'run_name = "{variant}"', "max_parallel = 8", ""]
    lines[3] = f'base = "{os.path.relpath(REPO / "configs/runs/protocol-base.toml", out.parent.resolve())}"'
    for r in todo:
        args = train_argv(proto, r, data)
        settings = {k[2:]: v for k, v in zip(args[0::2], args[1::2]) if not k.startswith("--run.")}
        settings["checkpoint.resume"] = "auto"  # a requeued job continues its run
        lines.append(f'[variants."{r.name}"]')
        lines += [f'"{key}" = {_toml_literal(value)}' for key, value in settings.items()]
        lines.append("")
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, "\n".join(lines))
    return out


def _toml_literal(text: str) -> str:
    for cast in (int, float):
        try:
            cast(text)
            return text
        except ValueError:
            pass
    return "true" if text == "true" else "false" if text == "false" else f'"{text}"'


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.protocol", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["plan", "run", "grid", "export"])
    parser.add_argument("--config", required=True, help="a protocol TOML (configs/protocol/)")
    parser.add_argument("--out", default="", help="export: the CSV (default: protocol.data); "
                        "grid: the sweep TOML (default: runs/protocol/NAME.grid.toml)")
    parser.add_argument("--dry-run", action="store_true", help="run: print the plan and exit")
    parser.add_argument("--shard", default="0/1", help="run: worker K of N sharing the plan (K/N), e.g. "
                        "two processes with 0/2 and 1/2")
    args = parser.parse_args(argv)

    def go() -> int:
        proto = load_protocol(args.config)
        if args.command == "plan" or args.dry_run:
            print_plan(proto)
            return 0
        if args.command == "run":
            k, _, n = args.shard.partition("/")
            if not (k.isdigit() and n.isdigit() and int(k) < int(n)):
                raise ConfigError(f"--shard {args.shard!r}: expected K/N with 0 <= K < N, e.g. 1/2")
            return run_all(proto, (int(k), int(n)))
        if args.command == "grid":
            out = write_grid(proto, Path(args.out or f"runs/protocol/{proto.protocol.name}.grid.toml"))
            print(f"wrote {out}: submit with `python -m slurm sweep --grid {out}`; re-run `grid` after it finished")
            return 0
        rows = export_rows(proto)
        out = Path(args.out or proto.protocol.data)
        write_csv(rows, out)
        print(f"wrote {out}: {len(rows)} rows from {len({r['run'] for r in rows})} runs")
        return 0
    return run_cli(go)


if __name__ == "__main__":
    sys.exit(main())
