"""Training-stack overhead on CPU: steps/s of the full stack (streaming loader + DeepSpeed engine + metrics/
tensorboard logging) vs a bare PyTorch loop training the same ~10M-parameter model on the same batches held
in memory, measured side by side in this process (alternating, to share the machine's load); and the
loader alone in tokens/s against what a training step consumes.

    .venv/bin/python benchmarks/bench_train.py [--steps 12] [--rounds 2]
Goals (issue 4): full-stack overhead <= 10%; loader >= 50x the tokens/s training consumes.
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pretrain.config import RunConfig  # noqa: E402
from pretrain.data import TrainLoader  # noqa: E402
from pretrain.models import build_model  # noqa: E402
from pretrain.models.flops import param_counts  # noqa: E402
from pretrain.schedule import lr_multiplier  # noqa: E402
from stackcore.config import load_config  # noqa: E402
from stackcore.paths import shared_dir  # noqa: E402
from stackcore.rundir import read_metrics  # noqa: E402

# ~10M parameters with the GPT-2 vocabulary (the shared corpus is r50k-tokenized).
MODEL = ["--model.family", "mixer", "--model.d_model", "96", "--model.n_layers", "4", "--model.n_ctx", "128"]


def shared_data() -> Path:
    return shared_dir("data")  # $MIXERSTACK_SHARED or the folder beside the repository


def prep(out: Path) -> Path:
    data = shared_data()
    subprocess.run([sys.executable, "-m", "data_prep", "tokenize", "--input", str(data / "tinystories/train-head.jsonl"),
                    "--tokenizer", str(data / "tokenizers/r50k_base.tiktoken"), "--out", str(out),
                    "--sample-tokens", "8192", "--val-fraction", "0.02", "--workers", "1"],
                   check=True, cwd=REPO, capture_output=True)
    return out


def config(corpus: Path, run_dir: Path, name: str, steps: int) -> list[str]:
    return ["--data.path", str(corpus), "--run.dir", str(run_dir), "--run.name", name, *MODEL,
            "--train.steps", str(steps), "--train.micro_batch", "8", "--train.global_batch", "8",
            "--train.warmup", "2", "--train.schedule", "cosine", "--train.weight_decay", "0.1",
            "--train.device", "cpu", "--data.val_tokens", "256", "--log.every", "1",
            "--checkpoint.every", "0", "--checkpoint.resume", "none"]


def cpu_s() -> float:
    """CPU seconds of this process, all threads (DeepSpeed's and gloo's included): less sensitive than wall
    time to the other jobs sharing this machine."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def full_stack(corpus: Path, root: Path, steps: int, warm: int, tag: str) -> tuple[float, float]:
    """(wall s/step from the run's own wall_s, CPU s/step as the difference of a short and a long run,
    which cancels startup, final validation and the final checkpoint)."""
    from pretrain.train import main
    cpu = []
    for n in (warm + 2, steps):
        start = cpu_s()
        assert main(config(corpus, root, f"{tag}-{n}", n)) == 0
        cpu.append(cpu_s() - start)
    rows = {r["step"]: r for r in read_metrics(root / f"{tag}-{steps}") if "wall_s" in r}
    return (rows[steps]["wall_s"] - rows[warm]["wall_s"]) / (steps - warm), (cpu[1] - cpu[0]) / (steps - warm - 2)


def bare_loop(cfg, batches: list[tuple[torch.Tensor, torch.Tensor]], warm: int) -> tuple[float, float]:
    torch.manual_seed(cfg.run.seed)
    model = build_model(cfg.model)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                            lr=cfg.train.lr, betas=tuple(cfg.train.betas), foreach=False)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_multiplier(s, len(batches), 2, "cosine"))
    for i, (x, y) in enumerate(batches):
        if i == warm:
            start, start_cpu = time.perf_counter(), cpu_s()
        loss = model(x, labels=y).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        float(loss.detach())
    n = len(batches) - warm
    return (time.perf_counter() - start) / n, (cpu_s() - start_cpu) / n


def loader_tokens_per_s(cfg, n: int) -> float:
    loader = TrainLoader(cfg, 0, 1)
    next(loader)
    start = time.perf_counter()
    tokens = sum(next(loader)[0].numel() for _ in range(n))
    return tokens / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    warm = 2
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        corpus = prep(tmp / "prep")
        cfg = load_config(RunConfig, None, config(corpus, tmp, "x", args.steps))
        params = param_counts(cfg.model)["total"]
        loader = TrainLoader(cfg, 0, 1)
        batches = [next(loader) for _ in range(args.steps)]
        full, bare = [], []
        for r in range(args.rounds):  # alternate so both see the same machine load
            full.append(full_stack(corpus, tmp, args.steps, warm, f"full{r}"))
            bare.append(bare_loop(cfg, batches, warm))
        loader_tps = loader_tokens_per_s(cfg, 400)
    step_tokens = cfg.train.global_batch * cfg.model.n_ctx
    print(f"model: mixer d96 x 4 layers, n_ctx 128, {params / 1e6:.1f}M params; global batch 8 x 128 tokens; "
          f"{args.steps} steps ({warm} warm-up) x {args.rounds} rounds, median of rounds")
    med = lambda xs, i: float(np.median([x[i] for x in xs]))  # noqa: E731
    for what, i in (("wall", 0), ("CPU", 1)):
        f, b = med(full, i), med(bare, i)
        print(f"  [{what:4s}] bare PyTorch loop {1 / b:6.3f} steps/s ({b * 1e3:5.0f} ms/step)   full stack "
              f"{1 / f:6.3f} steps/s ({f * 1e3:5.0f} ms/step)   overhead {f / b - 1:+6.1%} (goal <= +10%)   "
              f"rounds full {[round(x[i] * 1e3) for x in full]} bare {[round(x[i] * 1e3) for x in bare]}")
    fb, bb = min(x[0] for x in full), min(x[0] for x in bare)
    print(f"  [wall, best round: least disturbed by other jobs] bare {bb * 1e3:.0f} ms/step, full stack "
          f"{fb * 1e3:.0f} ms/step, overhead {fb / bb - 1:+.1%}")
    consume = step_tokens / med(full, 0)
    print(f"  loader alone {loader_tps:,.0f} tokens/s = {loader_tps / consume:,.0f}x what training consumes "
          f"({consume:,.0f} tokens/s)  (goal >= 50x)")


if __name__ == "__main__":
    main()
