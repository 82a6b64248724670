"""What happens around a step: metrics.jsonl + tensorboard, status.json, signals, validation, stats.
Each piece is small and testable alone; train.py only calls them."""
from __future__ import annotations

import json
import math
import signal
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from data_prep.format import atomic_write_json
from pretrain.distributed import all_reduce_sum
from stackcore import rundir

STATUS = "status.json"
ERROR = "error.txt"


def write_status(run_dir: Path, state: str, step: int, last_loss: float | None, error: str | None = None) -> None:
    """Rank 0 only: {state: running|preempted|completed|failed, step, last_loss, error} (read by slurm status)."""
    atomic_write_json(run_dir / STATUS, {"state": state, "step": step, "last_loss": last_loss, "error": error,
                                         "time": time.time()})


class MetricsLog:
    """metrics.jsonl rows and the same scalars in tensorboard, by step, by tokens and by MFLOPs
    (tensorboard steps are int64, so FLOPs go in units of 1e6)."""

    def __init__(self, run_dir: Path, resume_step: int):
        from torch.utils.tensorboard import SummaryWriter

        self.path = run_dir / rundir.METRICS
        if resume_step >= 0 and self.path.exists():  # drop rows the resumed run will write again
            rows = [r for r in rundir.read_metrics(run_dir) if r["step"] <= resume_step]
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
            tmp.replace(self.path)
        self.fh = self.path.open("a")
        # events reach disk every 10 s and at close (a flush per step would cost a file write per step)
        self.tb = SummaryWriter(str(run_dir / rundir.TB), purge_step=resume_step + 1 if resume_step >= 0 else None,
                                flush_secs=10)

    def log(self, row: dict[str, Any]) -> None:
        self.fh.write(json.dumps(row) + "\n")
        self.fh.flush()
        for key, value in row.items():
            if key in ("step", "tokens", "flops", "wall_s") or value is None or isinstance(value, (dict, list)):
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


class StopSignals:
    """SIGTERM / SIGUSR1 / SIGUSR2 only set a flag; the loop all-reduces it so every rank agrees on the
    step at which to save (a handler never does collective work itself)."""

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)

    def __init__(self):
        self.received: int | None = None
        self._old = {s: signal.signal(s, self._handle) for s in self.SIGNALS}

    def _handle(self, signum, _frame) -> None:
        self.received = signum

    def restore(self) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)


@torch.no_grad()
def evaluate(engine, val: torch.Tensor, world, micro_batch: int, max_tokens: int = 0) -> tuple[float, int]:
    """(mean loss in nats per target token, tokens) over the fixed validation set, split across ranks.
    Every rank runs the same number of forwards (ZeRO-3 gathers are collective), padding with empties."""
    if max_tokens:
        val = val[: max(1, math.ceil(max_tokens / val.shape[-1]))]
    mine = val[world.rank::world.size]
    n_batches = math.ceil(math.ceil(len(val) / world.size) / micro_batch)
    was_training = engine.training
    engine.eval()
    total, count = 0.0, 0
    for i in range(n_batches):
        batch = mine[i * micro_batch:(i + 1) * micro_batch]
        if len(batch) == 0:
            batch = val[:1].clone()
            batch[:, 1] = -100  # a dummy forward that counts nothing
        batch = batch.to(engine.device)
        logits = engine(batch[:, 0]).logits.float()
        labels = batch[:, 1]
        total += F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=-100,
                                 reduction="sum").item()
        count += int((labels != -100).sum())
    engine.train(was_training)
    total, count = all_reduce_sum([total, count], engine.device)
    return total / max(count, 1), int(count)


def layer_stats(engine) -> dict[str, float]:
    """Per-block gradient and parameter norms (call between the last backward and step); works at any ZeRO
    stage through DeepSpeed's full-tensor accessors (collective under ZeRO-3: every rank calls it)."""
    from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_grad

    out = {}
    for i, block in enumerate(engine.module.blocks):
        g2 = p2 = 0.0
        for p in block.parameters():
            grad = safe_get_full_grad(p)  # ZeRO 0 keeps plain tensors: the accessors return None there
            grad = p.grad if grad is None else grad
            param = safe_get_full_fp32_param(p)
            param = p.detach() if param is None else param
            if grad is not None:
                g2 += float(grad.float().pow(2).sum())
            p2 += float(param.float().pow(2).sum())
        out[f"block{i:02d}_grad_norm"] = math.sqrt(g2)
        out[f"block{i:02d}_param_norm"] = math.sqrt(p2)
    return out


def device_peak_flops(device: torch.device, precision: str) -> float:
    """Dense bf16 / tf32 peak of known accelerators (0 = unknown: MFU is then not reported)."""
    if device.type != "cuda":
        return 0.0
    name = torch.cuda.get_device_name(device)
    table = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12, "4090": 165e12}
    for key, bf16 in table.items():
        if key in name:
            return bf16 if precision == "bf16" else bf16 / 2
    return 0.0


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB -> MiB (host RSS)
