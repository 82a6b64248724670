"""metrics.jsonl + tensorboard (main rank), and the per-step scalars of the training loss."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pretrain.callbacks.base import Callback, Loop
from stackcore import rundir
from stackcore.atomic import atomic_write_text


class MetricsLog:
    """metrics.jsonl rows and the same scalars in tensorboard, by step, by tokens and by MFLOPs
    (tensorboard steps are int64, so FLOPs go in units of 1e6)."""

    AXES = ("step", "tokens", "flops", "wall_s")

    def __init__(self, run_dir: Path, resume_step: int):
        from torch.utils.tensorboard import SummaryWriter

        self.path = run_dir / rundir.METRICS
        if resume_step >= 0 and self.path.exists():  # drop rows the resumed run will write again
            rows = [r for r in rundir.read_metrics(run_dir) if r["step"] <= resume_step]
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in rows))
        self.fh = self.path.open("a")
        # events reach disk every 10 s and at close (a flush per step would cost a file write per step)
        self.tb = SummaryWriter(str(run_dir / rundir.TB), purge_step=resume_step + 1 if resume_step >= 0 else None,
                                flush_secs=10)

    def log(self, row: dict[str, Any]) -> None:
        self.fh.write(json.dumps(row) + "\n")
        self.fh.flush()
        for key, value in row.items():
            if key in self.AXES or value is None or isinstance(value, (dict, list, str)):
                continue
            self.tb.add_scalar(f"train/{key}" if not key.startswith("val") else f"val/{key}", value, row["step"])
            if key in ("train_loss", "val_loss", "val_bpb"):
                self.tb.add_scalar(f"by_tokens/{key}", value, int(row["tokens"]))
                self.tb.add_scalar(f"by_mflops/{key}", value, int(row["flops"] / 1e6))
        for name, value in (row.get("layer_stats") or {}).items():
            self.tb.add_scalar(f"layers/{name}", value, row["step"])

    def close(self) -> None:
        self.fh.close()
        self.tb.close()


class TrainScalars(Callback):
    """train_loss, lr, grad_norm, skipped_steps in the row of every log step (log.every, the last step,
    a stop)."""

    def on_step(self, loop: Loop) -> None:
        if not loop.is_log_step():
            return
        out = loop.out
        loop.ensure_row().update(train_loss=out.train_loss, lr=out.lr,
                                 grad_norm=float(out.grad_norm) if out.grad_norm is not None else None,
                                 skipped_steps=loop.state["skipped"])


class Metrics(Callback):
    """Writes the step's row (if one was made) to metrics.jsonl and tensorboard."""

    main_rank_only = True

    def __init__(self):
        self.log: MetricsLog | None = None

    def on_start(self, loop: Loop) -> None:
        self.log = MetricsLog(loop.run_dir, loop.step)

    def on_step(self, loop: Loop) -> None:
        if loop.row is not None:
            self.log.log(loop.row)

    def close(self, loop: Loop) -> None:
        if self.log is not None:
            self.log.close()
            self.log = None
