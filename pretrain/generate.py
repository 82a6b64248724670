"""`python -m pretrain.generate --run RUN_DIR --prompt TEXT`: sample text from any trained model family.

Greedy decoding (`--temperature 0`, the default) or temperature sampling (optionally top-k), a fixed
seed, at most `--max-new-tokens`, stopping at EOS. A masked mixer only ever sees the last n_ctx tokens,
each at its position inside that fixed window. When prompt + output outgrow the window it slides by
one token per step (`--overflow slide`) or generation stops (`--overflow stop`).

While the window has not slid, a model with an incremental step (`decode_state()` / `decode_step()`:
the masked mixer, Toeplitz or full) feeds one token per step: each mixing stage keeps its inputs so far
and reads one weight row (Toeplitz: its per-distance weights) -- O(t*d) per layer, no n x n matrix.
Once the window slides every position moves, so the window is re-run (a Toeplitz mixer by FFT). Other
families always re-run the window: the loop uses only `model(input_ids).logits` for them.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from stackcore.errors import run_cli


@dataclass
class Generation:
    prompt_ids: list[int]
    new_ids: list[int]
    stop: str  # "eos", "max_new_tokens" or "window"


def _next_token(logits: torch.Tensor, temperature: float, top_k: int, generator: torch.Generator) -> int:
    if temperature <= 0:
        return int(logits.argmax())
    scaled = logits.float() / temperature
    if 0 < top_k < scaled.numel():
        kth = scaled.topk(top_k).values[-1]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    probs = torch.softmax(scaled, dim=-1)
    return int(torch.multinomial(probs.cpu(), 1, generator=generator))


class _NextLogits:
    """Logits for the token after `ids`: by incremental steps while the window has not slid and the
    model has them, else by re-running the model on the last n_ctx tokens."""

    def __init__(self, model: nn.Module, n_ctx: int, device):
        make_state = getattr(model, "decode_state", None)
        self.state = make_state() if callable(make_state) else None
        self.model, self.n_ctx, self.device = model, n_ctx, device
        self.fed = 0  # tokens of ids already stepped through

    def __call__(self, ids: list[int]) -> torch.Tensor:
        if self.state is not None and len(ids) <= self.n_ctx:
            for token in ids[self.fed:]:
                logits = self.model.decode_step(token, self.state)
            self.fed = len(ids)
            return logits
        self.state = None  # the window slid: positions moved, the stepped state no longer applies
        return self.model(torch.tensor([ids[-self.n_ctx:]], device=self.device)).logits[0, -1]


@torch.no_grad()
def generate(model: nn.Module, prompt_ids: list[int], max_new_tokens: int = 64, temperature: float = 0.0,
             top_k: int = 0, eos_id: int | None = None, seed: int = 0, n_ctx: int | None = None,
             overflow: str = "slide") -> Generation:
    """Continue `prompt_ids`; the EOS token, when produced, ends the output (and is not included)."""
    if not prompt_ids:
        raise ValueError("empty prompt: give at least one token (e.g. the EOS id to start a document)")
    if overflow not in ("slide", "stop"):
        raise ValueError(f"overflow must be 'slide' or 'stop', got {overflow!r}")
    n_ctx = n_ctx or model.n_ctx
    vocab = model.embedding.num_embeddings
    bad = [t for t in prompt_ids if not 0 <= t < vocab]
    if bad:
        raise ValueError(f"prompt token ids {bad[:5]} outside the model's vocabulary 0..{vocab - 1}; "
                         "was the prompt encoded with the run's tokenizer?")
    was_training = model.training
    model.eval()
    device = model.embedding.weight.device
    generator = torch.Generator().manual_seed(seed)
    next_logits = _NextLogits(model, n_ctx, device)
    ids = list(prompt_ids)
    new: list[int] = []
    stop = "max_new_tokens"
    try:
        while len(new) < max_new_tokens:
            if len(ids) >= n_ctx and overflow == "stop":
                stop = "window"
                break
            logits = next_logits(ids)
            token = _next_token(logits, temperature, top_k, generator)
            if eos_id is not None and token == eos_id:
                stop = "eos"
                break
            ids.append(token)
            new.append(token)
    finally:
        model.train(was_training)
    return Generation(prompt_ids=list(prompt_ids), new_ids=new, stop=stop)


def load_run_model(path: str | Path):
    """(model, RunConfig) of an export folder, a run directory (its latest checkpoint is exported to a
    temporary folder first) or a checkpoint."""
    from pretrain.export import export, load_model

    path = Path(path)
    if (path / "model.safetensors").is_file():
        return load_model(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such run directory or export; pass runs/NAME")
    with tempfile.TemporaryDirectory(prefix="generate-export-") as tmp:
        export(path, tmp)
        return load_model(tmp)


def run_tokenizer(cfg, override: str | None = None):
    """The tokenizer the run was trained with: --tokenizer, else the data manifest's."""
    from data_prep.format import read_manifest
    from data_prep.tokenizer import load_tokenizer

    if override:
        return load_tokenizer(override)
    if not cfg.data.path:
        raise SystemExit("the run config has no data.path to find its tokenizer; pass --tokenizer NAME_OR_FILE")
    manifest = read_manifest(cfg.data.path)
    return load_tokenizer(manifest.get("tokenizer_spec") or manifest["tokenizer"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pretrain.generate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, help="run directory, export folder or checkpoint")
    ap.add_argument("--prompt", default="", help="prompt text (empty: start a document after EOS)")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    ap.add_argument("--top-k", type=int, default=0, help="sample from the k likeliest tokens (0 = all)")
    ap.add_argument("--samples", type=int, default=1, help="continuations (seeds seed, seed+1, ...)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--overflow", choices=("slide", "stop"), default="slide")
    ap.add_argument("--tokenizer", help="tokenizer name or .tiktoken file (default: the run's data manifest)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    model, cfg = load_run_model(args.run)
    model.to(args.device)
    enc = run_tokenizer(cfg, args.tokenizer)
    eos = enc.eot_token
    prompt = enc.encode_ordinary(args.prompt) if args.prompt else [eos]
    label = f"{cfg.run.name}: {cfg.model.family} d{cfg.model.d_model}x{cfg.model.n_layers} n_ctx={cfg.model.n_ctx}"
    mode = "greedy" if args.temperature <= 0 else f"T={args.temperature}" + (f" top-k={args.top_k}" if args.top_k else "")
    for i in range(args.samples):
        out = generate(model, prompt, args.max_new_tokens, args.temperature, args.top_k, eos, args.seed + i,
                       cfg.model.n_ctx, args.overflow)
        print(f"--- {label} | {mode} | seed {args.seed + i} | stop: {out.stop}")
        print(args.prompt + enc.decode(out.new_ids))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, bad_input=(FileNotFoundError,)))
