"""Is a Toeplitz-by-FFT mixer's validation loss real? Re-evaluate its trained weights through the exact
matrix path, and probe the trained model for a leak from the future.

The FFT path is causal only up to float rounding (the transform mixes all positions); a padding bug
would make it circular and let the end of a sequence leak into its start, which would show as a
validation loss far below what the same weights give through the dense masked Toeplitz matrix (exactly
causal). Two checks per run directory:
  1. val loss with mixing_impl = "fft" (as trained) and "dense", same weights, same validation set;
  2. changing the tokens after position t moves the logits at positions <= t by at most float rounding.

    .venv/bin/python scripts/check_fft_eval.py RUN_DIR [RUN_DIR ...] --data DATA_DIR --out FILE.json
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from eval.loss import evaluate, load_checkpoint  # noqa: E402
from stackcore.atomic import atomic_write_json  # noqa: E402
from stackcore.errors import UserError, run_cli  # noqa: E402


def with_impl(model, cfg, impl: str):
    """The same weights in a model built with another mixing_impl."""
    from pretrain.models import build_model
    other_cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, mixing_impl=impl))
    other = build_model(other_cfg.model)
    other.load_state_dict(model.state_dict())
    return other.eval(), other_cfg


def future_leak(model, n_ctx: int, vocab: int, t: int) -> float:
    """Max |logit change| at positions <= t when every token after t is replaced, over the max |logit|."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (2, n_ctx), generator=g)
    changed = ids.clone()
    changed[:, t + 1:] = torch.randint(0, vocab, (2, n_ctx - t - 1), generator=g)
    with torch.no_grad():
        a, b = model(ids).logits, model(changed).logits
    return float((a[:, :t + 1] - b[:, :t + 1]).abs().max() / a.abs().max())


def check(run_dir: Path, data: Path) -> dict:
    from pretrain.data import check_manifest
    from pretrain.objectives import build_objective
    model, cfg = load_checkpoint(run_dir)
    if cfg.model.mixing != "toeplitz":
        raise UserError(f"{run_dir}: model.mixing = {cfg.model.mixing!r}; this check is for Toeplitz mixers")
    val = build_objective(cfg).validation_set(check_manifest(data, cfg.model, cfg.data))
    out = {"run": run_dir.name, "n_ctx": cfg.model.n_ctx, "trained_impl": cfg.model.mixing_impl}
    for impl in ("fft", "dense"):
        m, c = with_impl(model, cfg, impl)
        out[f"val_loss_{impl}"] = evaluate(m, build_objective(c), val, progress=False)["val_loss"]
        out[f"future_leak_{impl}"] = max(future_leak(m, cfg.model.n_ctx, cfg.model.vocab_size, t)
                                         for t in (0, cfg.model.n_ctx // 2, cfg.model.n_ctx - 2))
    out["val_loss_gap"] = abs(out["val_loss_fft"] - out["val_loss_dense"])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run directories of Toeplitz mixers")
    parser.add_argument("--data", required=True, help="the data_prep directory the runs validated on")
    parser.add_argument("--out", required=True, help="JSON file for the results")

    def go() -> int:
        results = [check(Path(r), Path(args.data)) for r in args.runs]
        for r in results:
            print(f"{r['run']}: val loss fft {r['val_loss_fft']:.5f} dense {r['val_loss_dense']:.5f} "
                  f"(gap {r['val_loss_gap']:.1e}); future leak fft {r['future_leak_fft']:.1e}, "
                  f"dense {r['future_leak_dense']:.1e}")
        atomic_write_json(args.out, {"command": "scripts/check_fft_eval.py", "runs": results})
        return 0
    args = parser.parse_args(argv)
    return run_cli(go)


if __name__ == "__main__":
    sys.exit(main())
