"""`python -m eval loss --checkpoint PATH --data PREP_DIR [--split val] [--tokens N] [--batch B] [--json FILE]`

Loss (nats/token) and bits per byte of a checkpoint on a prepared split. PATH is an export
(`model.safetensors` + `config.toml`, from `pretrain.export`), a DeepSpeed checkpoint directory, or a
run directory (its latest checkpoint). The sequences are the ones the trainer validates on
(`pretrain.validation.validation_set`: the first N tokens of the split, packed or per document as the run's
data.mode says) and the metrics come from the run objective's `evaluate`, the function the trainer's
validation calls, so on the run's own val split this reproduces the logged val_loss and val_bpb.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
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


def evaluate(model, objective, val, batch: int = 16, device: str = "cpu", progress: bool = True) -> dict[str, Any]:
    """The run objective's metrics on `val` (from that objective's `validation_set`) through
    `Objective.evaluate`, the function the trainer's validation calls: one definition of val_loss and
    val_bpb (over the bytes of the tokens actually evaluated)."""
    model.eval().to(device)
    metrics = objective.evaluate(model, val, world=None, micro_batch=batch, device=device, progress=progress)
    if metrics.get("val_tokens") == 0:
        raise ValueError("no target tokens to evaluate (all labels ignored)")
    return metrics


def checkpoint_loss(checkpoint: str | Path, data: str | Path, split: str = "val", tokens: int = 0,
                    batch: int = 16, device: str = "cpu", progress: bool = True) -> dict[str, Any]:
    from pretrain.data import check_manifest
    from pretrain.objectives import build_objective
    model, cfg = load_checkpoint(checkpoint)
    data_cfg = dataclasses.replace(cfg.data, path=str(data), val_tokens=tokens or cfg.data.val_tokens)
    cfg = dataclasses.replace(cfg, data=data_cfg)
    manifest = split_as_val(check_manifest(data, cfg.model, cfg.data), split)
    objective = build_objective(cfg)
    val = objective.validation_set(manifest)
    if val is None:
        raise FormatError(f"{Path(data) / 'manifest.json'}: split {split!r} holds no sequence of "
                          f"n_ctx={cfg.model.n_ctx}; prep more text or use another split")
    start = time.perf_counter()
    metrics = evaluate(model, objective, val, batch=batch, device=device, progress=progress)
    result = {"loss": metrics.get("val_loss"), "tokens": metrics.get("val_tokens"), "bpb": metrics.get("val_bpb"),
              "metrics": metrics}
    result.update(bytes_per_token=getattr(val, "bytes_per_token", None), sequences=int(len(val)), split=split,
                  checkpoint=str(checkpoint), data=str(data), n_ctx=cfg.model.n_ctx, family=cfg.model.family,
                  objective=objective.name, fingerprint=manifest.get("fingerprint"),
                  wall_s=time.perf_counter() - start)
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
    others = {k: v for k, v in result["metrics"].items() if k not in ("val_loss", "val_bpb", "val_tokens", "val_bytes")}
    if others:
        print(f"other metrics of objective {result['objective']}: {others}")
    if args.json:
        atomic_write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
