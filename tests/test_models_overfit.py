"""Each family (and the mixer's main variants) memorises one small batch of real text: the loss
falls below 0.5 within a few hundred CPU steps. The TinyStories text is tokenised with the real
GPT-2 BPE and its tokens are renumbered into a compact vocabulary so a tiny model trains in seconds."""
import json

import pytest
import torch

from data_prep.tokenizer import load_tokenizer
from pretrain.models import build_model
from test_models_variants import tiny_config

BATCH, SEQ, STEPS = 8, 64, 400


@pytest.fixture(scope="module")
def real_batch(shared_data):
    enc = load_tokenizer(shared_data / "tokenizers" / "r50k_base.tiktoken")
    with open(shared_data / "tinystories" / "train-head.jsonl") as fh:
        texts = [json.loads(next(fh))["text"] for _ in range(BATCH)]
    rows = [enc.encode_ordinary(t)[:SEQ + 1] for t in texts]
    assert all(len(r) == SEQ + 1 for r in rows), "the first stories should be longer than SEQ + 1 tokens"
    compact = {tok: i for i, tok in enumerate(sorted({t for r in rows for t in r}))}
    ids = torch.tensor([[compact[t] for t in r] for r in rows])
    # labels are pre-aligned with the inputs: labels[:, t] is the token after input_ids[:, t]
    return ids[:, :-1], ids[:, 1:], len(compact)


def train_steps(cfg, inputs, labels, lr):
    torch.manual_seed(0)
    model = build_model(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    losses = []
    for _ in range(STEPS):
        loss = model(inputs, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if loss.item() < 0.3:
            break
    return losses


@pytest.mark.parametrize("overrides", [
    dict(family="mixer"),
    dict(family="mixer", heads=2, expansion=1, kernel=2),
    dict(family="mixer", linear=True),
    dict(family="llama", heads=4),
    dict(family="gpt", heads=4),
], ids=["mixer", "mixer-variants", "mixer-linear", "llama", "gpt"])
def test_model_overfits_one_batch_of_real_text(real_batch, overrides):
    inputs, labels, vocab = real_batch
    cfg = tiny_config(**{**overrides, "d_model": 64, "n_ctx": SEQ, "vocab_size": vocab})
    losses = train_steps(cfg, inputs, labels, lr=1e-3)
    assert losses[0] > 3.0, "an untrained model should be near chance (ln vocab)"
    assert min(losses) < 0.5, f"{cfg.family}: loss only fell to {min(losses):.3f} in {len(losses)} steps"
