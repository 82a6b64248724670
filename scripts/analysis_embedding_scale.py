"""Does the published 'untrained transformers h ~ 1' depend on the embedding scale?

The reference implementations initialise Llama's embeddings with std 0.02 (Hugging Face default) while
the mixer keeps nn.Embedding's N(0, 1); the metric starts from x0 ~ N(0, 1) with the same step sizes
for both. This measures h of untrained models of the flexibility sweep's shape with the embedding
rescaled to a few standard deviations, same text, same seed. Prints a markdown table.

    .venv/bin/python scripts/analysis_embedding_scale.py [--data runs/data/tinystories-4k] [--steps 500]
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

from eval.hamming import hamming  # noqa: E402
from eval.representation import heldout_windows  # noqa: E402
from pretrain.config import ModelConfig  # noqa: E402
from pretrain.models import build_model  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="runs/data/tinystories-4k")
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--lr", type=float, default=0.05)
    args = ap.parse_args()
    ids = heldout_windows(args.data, 64, args.samples)
    print(f"| family | embedding std | step size lr | h (all 4 blocks, mean ± std over {args.samples} windows) "
          "| final L1 per element |")
    print("|---|---|---|---|---|")
    # (std, lr): the default lr at three scales, then the lr scaled with the embedding (lr/std fixed)
    settings = [(1.0, args.lr), (0.1, args.lr), (0.02, args.lr), (0.02, args.lr * 0.02)]
    for family in ("mixer", "llama"):
        for std, lr in settings:
            torch.manual_seed(0)
            model = build_model(ModelConfig(family=family, d_model=128, n_layers=4, n_ctx=64, vocab_size=4096,
                                            heads=1 if family == "mixer" else 4))
            with torch.no_grad():
                model.embedding.weight.normal_(0.0, std)
            r = hamming(model, ids, steps=args.steps, lr=lr)
            print(f"| {family} | {std} | {lr:g} | {r.mean:.3f} ± {r.std:.3f} | {r.final_l1:.4f} |", flush=True)


if __name__ == "__main__":
    main()
