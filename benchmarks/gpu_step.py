"""One prepared GPU check (issue 4): bf16 training steps of the paper's matched pair through the real loop.

    .venv/bin/python benchmarks/gpu_step.py            # on a GPU machine: mixer d1024x16 vs llama d512x16x4h
    .venv/bin/python benchmarks/gpu_step.py --dry-run  # on CPU: tiny models, same code path (what CI can run)

For each model: find the largest micro-batch that fits (doubling, a forward+backward probe), then run
`pretrain.train` (DeepSpeed, bf16, ZeRO 0) for a few steps on a synthetic prep directory (random tokens
below the 8k vocabulary, written with data_prep.format) and report tokens/s, MFU against a bf16 matmul
ceiling measured in this same process, and peak memory. Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from data_prep.format import encode_sample, sample_key, shard_name, token_dtype  # noqa: E402
from stackcore.atomic import atomic_write_json  # noqa: E402
from pretrain.config import RunConfig  # noqa: E402
from pretrain.models import build_model  # noqa: E402
from pretrain.models.flops import param_counts, training_flops_per_token  # noqa: E402
from stackcore.config import load_config  # noqa: E402
from stackcore.rundir import read_metrics  # noqa: E402

PAIR = {"mixer d1024x16": "configs/models/mixer-1024.toml", "llama d512x16 4h": "configs/models/llama-512.toml"}
TINY = ["--model.d_model", "64", "--model.n_layers", "2", "--model.n_ctx", "64"]


def synthetic_prep(out: Path, vocab: int, tokens: int, seed: int = 0) -> Path:
    """A valid prep directory of random documents (throughput only; the loss is meaningless)."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    dtype, shards = token_dtype(vocab), []
    for split, n_tok in (("train", tokens), ("val", max(tokens // 50, 4096))):
        lengths = rng.integers(200, 2000, size=n_tok // 1000 + 1).astype("<u4")
        docs = [np.append(rng.integers(0, vocab - 1, size=n - 1), vocab - 1) for n in lengths]
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for i in range(0, len(docs), 64):
                chunk = docs[i:i + 64]
                sample = encode_sample(np.concatenate(chunk), np.array([len(d) for d in chunk], "<u4"), dtype)
                for ext, payload in sample.items():
                    info = tarfile.TarInfo(f"{sample_key(0, 0, i // 64)}.{ext}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
        name = shard_name(split, 0, 0)
        (out / name).write_bytes(buf.getvalue())
        shards.append({"name": name, "split": split, "task": 0, "seq": 0, "documents": len(docs),
                       "tokens": int(lengths.sum()), "bytes": len(buf.getvalue()), "sha256": ""})
    splits = {s["split"]: {"documents": s["documents"], "tokens": s["tokens"], "utf8_bytes": 4 * s["tokens"]}
              for s in shards}
    atomic_write_json(out / "manifest.json", {
        "version": 1, "tokenizer": "synthetic", "vocab_size": vocab, "eos_id": vocab - 1, "ranks_sha256": "",
        "dtype": dtype.name if dtype.name.startswith("uint") else ("uint16" if dtype.itemsize == 2 else "uint32"),
        "shards": shards, "totals": {"tokens": sum(s["tokens"] for s in shards), "bytes_per_token": 4.0,
                                     "splits": splits}})
    return out


def matmul_ceiling(device: torch.device, dtype: torch.dtype, n: int) -> float:
    """Achieved dense matmul FLOP/s at size n (the MFU denominator measured on this very device)."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    reps, start = 10, time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - start)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def largest_micro_batch(cfg, device: torch.device, dtype: torch.dtype, start: int, limit: int) -> int:
    """Doubling probe with forward+backward+an AdamW-sized margin; the last size that fit."""
    model = build_model(cfg.model).to(device)
    fits, mb = 0, start
    while mb <= limit:
        try:
            x = torch.randint(0, cfg.model.vocab_size - 1, (mb, cfg.model.n_ctx), device=device)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                model(x, labels=x).loss.backward()
            if device.type == "cuda":  # leave room for fp32 master weights + Adam moments (16 B/param)
                free, _ = torch.cuda.mem_get_info()
                if free < 16 * sum(p.numel() for p in model.parameters()) * 1.3:
                    break
            fits, mb = mb, mb * 2
        except torch.OutOfMemoryError:
            break
        finally:
            model.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    del model
    return fits


def run_pair(args) -> list[dict]:
    from pretrain.train import main as train_main

    device = torch.device("cuda" if torch.cuda.is_available() and not args.dry_run else "cpu")
    precision = "bf16" if device.type == "cuda" else args.cpu_precision
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    ceiling = matmul_ceiling(device, dtype, 8192 if device.type == "cuda" else 512)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        prep = synthetic_prep(tmp / "prep", 8000, 4_000_000 if device.type == "cuda" else 200_000)
        for label, model_toml in PAIR.items():
            extra = ["--run.dir", str(tmp / "runs"), "--run.name", label.split()[0], "--data.path", str(prep),
                     "--train.precision", precision, "--train.device", device.type, "--deepspeed.zero_stage", "0",
                     "--train.warmup", "2", "--train.steps", str(args.steps), "--log.every", "1",
                     "--log.eval_every", "0", "--data.val_tokens", "4096", "--checkpoint.every", "0",
                     "--checkpoint.keep", "1", "--checkpoint.resume", "none", "--log.peak_flops", str(ceiling)]
            extra += TINY if args.dry_run else []
            cfg = load_config(RunConfig, REPO / model_toml, extra)
            mb = largest_micro_batch(cfg, device, dtype, 1 if args.dry_run else 8, args.max_micro_batch)
            if mb == 0:
                raise SystemExit(f"{label}: not even a micro-batch of 1 fits")
            extra += ["--train.micro_batch", str(mb), "--train.global_batch", str(mb)]
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            assert train_main(["--config", str(REPO / model_toml), *extra]) == 0
            metrics = [r for r in read_metrics(tmp / "runs" / label.split()[0]) if "tokens_per_s" in r]
            steady = metrics[min(3, len(metrics) - 1):]  # skip warm-up steps (allocator, kernels)
            tps = float(np.median([r["tokens_per_s"] for r in steady]))
            flops_tok = training_flops_per_token(cfg.model, cfg.model.n_ctx)
            rows.append({"model": label + (" [dry run: d64x2]" if args.dry_run else ""), "params_M": param_counts(cfg.model)["total"] / 1e6, "micro_batch": mb,
                         "tokens_per_s": tps, "mfu": flops_tok * tps / ceiling,
                         "peak_mem_gb": max(r["peak_mem_mb"] for r in metrics) / 1024,
                         "loss_first_last": (metrics[0]["train_loss"], metrics[-1]["train_loss"])})
    print(f"\ndevice: {torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU (dry run)'}; precision "
          f"{precision}; measured {'bf16' if dtype == torch.bfloat16 else 'fp32'} matmul ceiling "
          f"{ceiling / 1e12:.1f} TFLOP/s; n_ctx {cfg.model.n_ctx}; {args.steps} steps each\n")
    print("| model | params (M) | micro-batch | tokens/s | MFU vs measured ceiling | peak memory (GB) | loss first->last |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['params_M']:.1f} | {r['micro_batch']} | {r['tokens_per_s']:,.0f} | "
              f"{r['mfu']:.1%} | {r['peak_mem_gb']:.2f} | {r['loss_first_last'][0]:.2f} -> "
              f"{r['loss_first_last'][1]:.2f} |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="tiny models on CPU: checks the path, not the speed")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--max-micro-batch", type=int, default=None)
    ap.add_argument("--cpu-precision", default="fp32", choices=["fp32", "bf16"])
    args = ap.parse_args()
    args.steps = args.steps or (4 if args.dry_run else 30)
    args.max_micro_batch = args.max_micro_batch or (4 if args.dry_run else 512)
    run_pair(args)


if __name__ == "__main__":
    main()
