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
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from pretrain.config import RunConfig  # noqa: E402
from pretrain.data import TrainLoader  # noqa: E402
from pretrain.models import build_model  # noqa: E402
from pretrain.models.flops import param_counts  # noqa: E402
from pretrain.schedule import lr_multiplier  # noqa: E402
from stackcore.config import load_config  # noqa: E402
from stackcore.rundir import read_metrics  # noqa: E402

# ~10M parameters with the GPT-2 vocabulary (the shared corpus is r50k-tokenized).
MODEL = ["--model.family", "mixer", "--model.d_model", "96", "--model.n_layers", "4", "--model.n_ctx", "128"]


def shared_data() -> Path:
    beside = REPO.parent / "shared" / "data"
    return beside if beside.is_dir() else Path("/work/shared/data")


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


def full_stack(corpus: Path, root: Path, steps: int, warm: int, tag: str) -> float:
    """Seconds per step of pretrain.train (startup, final eval and checkpoint excluded via wall_s)."""
    from pretrain.train import main
    assert main(config(corpus, root, tag, steps)) == 0
    rows = {r["step"]: r for r in read_metrics(root / tag) if "wall_s" in r}
    return (rows[steps]["wall_s"] - rows[warm]["wall_s"]) / (steps - warm)


def bare_loop(cfg, batches: list[tuple[torch.Tensor, torch.Tensor]], warm: int) -> float:
    torch.manual_seed(cfg.run.seed)
    model = build_model(cfg.model)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                            lr=cfg.train.lr, betas=tuple(cfg.train.betas), foreach=False)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_multiplier(s, len(batches), 2, "cosine"))
    for i, (x, y) in enumerate(batches):
        if i == warm:
            start = time.perf_counter()
        loss = model(x, labels=y).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        float(loss)
    return (time.perf_counter() - start) / (len(batches) - warm)


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
    f, b = min(full), min(bare)
    step_tokens = cfg.train.global_batch * cfg.model.n_ctx
    print(f"model: mixer d96 x 4 layers, n_ctx 128, {params / 1e6:.1f}M params; global batch 8 x 128 tokens; "
          f"{args.steps} steps ({warm} warm-up) x {args.rounds} rounds, best round")
    print(f"  bare PyTorch loop      {1 / b:7.3f} steps/s  ({b * 1e3:.0f} ms/step; rounds {[round(x * 1e3) for x in bare]})")
    print(f"  full stack (DeepSpeed) {1 / f:7.3f} steps/s  ({f * 1e3:.0f} ms/step; rounds {[round(x * 1e3) for x in full]})")
    print(f"  overhead full/bare     {f / b - 1:+7.1%}   (goal <= +10%)")
    consume = step_tokens / f
    print(f"  loader alone           {loader_tps:,.0f} tokens/s = {loader_tps / consume:,.0f}x what training consumes "
          f"({consume:,.0f} tokens/s)  (goal >= 50x)")


if __name__ == "__main__":
    main()
