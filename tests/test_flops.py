"""pretrain.models.flops against measurements of real models: FlopCounterMode on a forward+backward
(exactly equal, for every registered family and option), parameter counts (exact) and the activation
estimate (saved tensors, within 2%); the planner on the paper's pair; the two CLIs."""
import json

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from eval import flops_cli, match
from pretrain.models import build_model
from pretrain.models.flops import (activation_values_per_sequence, memory_estimate, param_counts,
                                   training_flops_per_token)
from conftest import REPO_ROOT
from pretrain.models.registry import family_names
from test_models_variants import family_config, variant_params, tiny_config

PAIR = REPO_ROOT / "configs" / "models"


def measured_training_flops(model, ids) -> int:
    # FlopCounterMode has no formula for the CPU flash-attention kernel, so attention runs on the
    # math backend here: the same dense QK^T and AV matmuls, visible to the counter.
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(ids, labels=ids).loss.backward()
    return counter.get_total_flops()


@variant_params()
@pytest.mark.parametrize("seq_len", [16, 11])
def test_training_flops_match_flop_counter(overrides, seq_len):
    torch.manual_seed(0)
    cfg = tiny_config(**overrides)
    model = build_model(cfg)
    ids = torch.randint(0, cfg.vocab_size, (2, seq_len))
    analytic = training_flops_per_token(cfg, n_ctx=seq_len) * ids.numel()
    assert model.training_flops_per_token(seq_len) * ids.numel() == analytic
    assert measured_training_flops(model, ids) == analytic


def test_useful_flops_halve_only_the_sequence_terms():
    cfg = tiny_config(family="llama", heads=4)
    dense, useful = training_flops_per_token(cfg), training_flops_per_token(cfg, useful=True)
    assert dense - useful == pytest.approx(3 * cfg.n_layers * 4 * cfg.n_ctx * cfg.d_model / 2)
    mixer = tiny_config(family="mixer", kernel=2)
    diff = training_flops_per_token(mixer) - training_flops_per_token(mixer, useful=True)
    assert diff == pytest.approx(3 * mixer.n_layers * 2 * 2 * mixer.n_ctx * mixer.d_model / 2)
    # the lm_head counts, embedding lookups do not
    wider_vocab = tiny_config(family="mixer", vocab_size=197)
    assert training_flops_per_token(wider_vocab) - training_flops_per_token(tiny_config(family="mixer")) \
        == pytest.approx(3 * 2 * 32 * 100)


@variant_params()
def test_param_counts_are_exact(overrides):
    cfg = tiny_config(**overrides)
    model = build_model(cfg)
    counts = param_counts(cfg)
    assert counts["total"] == model.num_params()
    assert counts["non_embedding"] == model.num_params(non_embedding=True)


def saved_activation_values(model, ids) -> float:
    """Values autograd keeps for backward, excluding parameters and buffers (deduplicated)."""
    skip = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    seen = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in skip:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(ids, labels=ids)
    return sum(seen.values()) / 4


@variant_params()
def test_activation_estimate_matches_saved_tensors(overrides):
    torch.manual_seed(0)
    cfg = tiny_config(**{**overrides, "n_ctx": 24, "d_model": 48})
    ids = torch.randint(0, cfg.vocab_size, (1, cfg.n_ctx))
    measured = saved_activation_values(build_model(cfg), ids)
    assert activation_values_per_sequence(cfg) == pytest.approx(measured, rel=0.02)
    mem = memory_estimate(cfg, batch=3)
    assert mem["total"] == pytest.approx(16 * param_counts(cfg)["total"] + 3 * 4 * measured, rel=0.02)


def test_planner_pairs_the_papers_models():
    by_memory = match.plan(str(PAIR / "llama-512.toml"), "mixer", "memory", top=5)
    shapes = [(r["d_model"], r["n_layers"], r["heads"]) for r in by_memory]
    assert (1024, 16, 1) in shapes  # the paper's memory-matched mixer
    assert all(0.9 < r["ratio"] < 1.1 for r in by_memory)
    by_flops = match.plan(str(PAIR / "llama-512.toml"), "mixer", "flops", top=3)
    assert all(abs(r["ratio"] - 1) < 0.1 for r in by_flops)
    # the dense mixer at d1024 costs about twice the Llama's FLOPs: FLOP-matched is much narrower
    assert all(r["d_model"] < 1024 for r in by_flops)
    best = by_flops[0]
    assert training_flops_per_token(best["config"]) == pytest.approx(best["value"])
    back = match.plan(str(PAIR / "mixer-1024.toml"), "llama", "memory", top=5)
    assert (512, 16, 4) in [(r["d_model"], r["n_layers"], r["heads"]) for r in back]
    short = match.plan(str(PAIR / "llama-512.toml"), "mixer", "flops", n_ctx=128, top=1)[0]
    assert short["config"].n_ctx == 128 and abs(short["ratio"] - 1) < 0.1


def test_cli_flops_and_match(capsys):
    assert flops_cli.main(["--config", str(PAIR / "mixer-1024.toml"), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    cfg = match.load_model_config(str(PAIR / "mixer-1024.toml"))
    assert rep["params_total"] == param_counts(cfg)["total"]
    assert rep["train_flops_per_token"] == training_flops_per_token(cfg)
    assert rep["train_flops_per_step"] == rep["train_flops_per_token"] * rep["tokens_per_step"]
    assert flops_cli.main(["--config", str(PAIR / "llama-tiny.toml"), "--model.heads", "2"]) == 0
    assert "train FLOPs/token" in capsys.readouterr().out
    assert flops_cli.main(["--config", str(PAIR / "llama-tiny.toml"), "--model.hedas", "2"]) == 2
    assert "did you mean 'heads'" in capsys.readouterr().err
    assert match.main(["--reference", str(PAIR / "llama-512.toml"), "--family", "mixer", "--by", "memory"]) == 0
    table = capsys.readouterr().out
    assert "1024" in table and "ratio" in table
    assert match.main(["--reference", "missing.toml", "--family", "mixer"]) == 2
    assert "not found" in capsys.readouterr().err


def test_breakdown_sums_to_the_total_and_only_the_sequence_part_grows_with_n_ctx():
    from pretrain.models.flops import forward_flops_breakdown

    for family in family_names():
        cfg = family_config(family)
        short, long = forward_flops_breakdown(cfg, 8), forward_flops_breakdown(cfg, 16)
        assert 3 * sum(long.values()) == pytest.approx(training_flops_per_token(cfg, 16))
        assert long["sequence"] == pytest.approx(2 * short["sequence"])
        assert "lm_head" in long and all(long[k] == short[k] for k in long if k != "sequence"), family
