"""`python -m eval loss --checkpoint PATH --data PREP_DIR [--split val] [--tokens N] [--batch B] [--json FILE]`

Loss (nats/token) and bits per byte of a checkpoint on a prepared split. PATH is an export
(`model.safetensors` + `config.toml`, from `pretrain.export`), a DeepSpeed checkpoint directory, or a
run directory (its latest checkpoint). The sequences are the ones the trainer validates on
(`pretrain.validation.validation_set`: the first N tokens of the split, packed or per document as the run's
data.mode says), so on the run's own val split this reproduces the logged val_loss.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from data_prep.format import FormatError
from stackcore.atomic import atomic_write_json


def load_checkpoint(path: str | Path):
    """(model, RunConfig) of an export; DeepSpeed checkpoints and run dirs go through an export first,
    so there is one loading path (no pickle, no DeepSpeed engine)."""
    from pretrain.export import export, load_model
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint; pass an export directory (model.safetensors), "
                                "a DeepSpeed checkpoint directory or a run directory")
    if (path / "model.safetensors").is_file() or path.suffix == ".safetensors":
        return load_model(path)
    with tempfile.TemporaryDirectory(prefix="eval-loss-export-") as tmp:
        export(path, tmp)
        return load_model(tmp)


def split_as_val(manifest: dict[str, Any], split: str) -> dict[str, Any]:
    """A view of the manifest in which `split` plays the validation split, so the trainer's own
    validation-set builder reads it (one definition of which tokens are evaluated)."""
    if split == "val":
        return manifest
    shards = [dict(s, split="val") for s in manifest["shards"] if s["split"] == split]
    if not shards:
        raise FormatError(f"manifest has no shards of split {split!r}; splits: "
                          f"{sorted({s['split'] for s in manifest['shards']})}")
    totals = dict(manifest["totals"])
    splits = dict(totals.get("splits", {}))
    splits["val"] = splits.get(split, {})
    totals["splits"] = splits
    return dict(manifest, shards=shards, totals=totals)


def evaluate(model, sequences, batch: int = 16, device: str = "cpu", progress: bool = True) -> dict[str, float]:
    """Token-weighted mean next-token loss over [N, 2, n_ctx] (inputs, aligned labels) sequences."""
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    model.eval().to(device)
    total, count = 0.0, 0
    starts = range(0, len(sequences), batch)
    with torch.no_grad():
        for i in tqdm(starts, desc="eval loss", unit="batch", disable=not progress):
            chunk = sequences[i: i + batch].to(device)
            logits = model(chunk[:, 0]).logits.float()
            labels = chunk[:, 1]
            total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                           ignore_index=-100, reduction="sum"))
            count += int((labels != -100).sum())
    if count == 0:
        raise ValueError("no target tokens to evaluate (all labels ignored)")
    return {"loss": total / count, "tokens": count}


def checkpoint_loss(checkpoint: str | Path, data: str | Path, split: str = "val", tokens: int = 0,
                    batch: int = 16, device: str = "cpu", progress: bool = True) -> dict[str, Any]:
    from pretrain.data import check_manifest
    from pretrain.validation import validation_set
    model, cfg = load_checkpoint(checkpoint)
    data_cfg = dataclasses.replace(cfg.data, path=str(data), val_tokens=tokens or cfg.data.val_tokens)
    cfg = dataclasses.replace(cfg, data=data_cfg)
    manifest = split_as_val(check_manifest(data, cfg.model, cfg.data), split)
    found = validation_set(cfg, manifest)
    if found is None:
        raise FormatError(f"{Path(data) / 'manifest.json'}: split {split!r} holds no sequence of "
                          f"n_ctx={cfg.model.n_ctx}; prep more text or use another split")
    sequences, bytes_per_token = found
    start = time.perf_counter()
    result = evaluate(model, sequences, batch=batch, device=device, progress=progress)
    result.update(bpb=result["loss"] / math.log(2) / bytes_per_token if bytes_per_token else None,
                  bytes_per_token=bytes_per_token, sequences=int(len(sequences)), split=split,
                  checkpoint=str(checkpoint), data=str(data), n_ctx=cfg.model.n_ctx, family=cfg.model.family,
                  fingerprint=manifest.get("fingerprint"), wall_s=time.perf_counter() - start)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval loss", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="export dir, DeepSpeed checkpoint dir or run dir")
    parser.add_argument("--data", required=True, help="data_prep output directory (holds manifest.json)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--tokens", type=int, default=0, help="tokens to evaluate (default: the run's data.val_tokens)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default="", help="also write the result as JSON here")
    args = parser.parse_args(argv)
    from pretrain.checkpoint import CheckpointError
    try:
        result = checkpoint_loss(args.checkpoint, args.data, args.split, args.tokens, args.batch, args.device)
    except (FormatError, FileNotFoundError, ValueError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    bpb = "n/a" if result["bpb"] is None else f"{result['bpb']:.4f}"
    print(f"{result['checkpoint']} on {result['data']} [{result['split']}]: loss {result['loss']:.4f} nats/token, "
          f"{bpb} bits/byte over {result['tokens']} tokens ({result['sequences']} sequences of {result['n_ctx']}) "
          f"in {result['wall_s']:.1f} s")
    if args.json:
        atomic_write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
