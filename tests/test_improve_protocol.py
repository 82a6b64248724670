"""The improvement study's protocol configs (configs/protocol/improve-*.toml): every shape resolves, the
variants are FLOP-matched to the Llama, each run's train arguments rebuild the same [model] (the list-
valued hybrid option included), and `eval.protocol_subset` picks runs LR-major or names a bad label/LR."""
from __future__ import annotations

from pathlib import Path

import pytest

from eval import protocol as P
from eval import protocol_subset as S
from pretrain.config import RunConfig
from pretrain.models.flops import training_flops_per_token
from stackcore.config import ConfigError, load_cli

REPO = Path(__file__).resolve().parents[1]
SCREEN = REPO / "configs" / "protocol" / "improve-screen.toml"
FULL = REPO / "configs" / "protocol" / "improve-512.toml"


@pytest.mark.parametrize("path", [SCREEN, FULL], ids=["screen", "full"])
def test_every_shape_is_matched_to_the_llama_and_its_arguments_rebuild_it(path, tmp_path):
    proto = P.load_protocol(path)
    proto.protocol.runs_dir = str(tmp_path)  # nothing has run here: the LR stage only
    runs = P.plan_runs(proto)
    assert len({r.name for r in runs}) == len(runs)
    for n_ctx in proto.protocol.n_ctx:
        at = [r for r in runs if r.cfg.n_ctx == n_ctx and r.lr == proto.protocol.lrs[0]]
        llama = next(r for r in at if r.label == "llama")
        for r in at:  # within the planner's width step (16) of the reference's FLOPs
            assert abs(training_flops_per_token(r.cfg) / training_flops_per_token(llama.cfg) - 1) < 0.12, r.name
            argv = P.train_argv(proto, r, tmp_path / "data")
            rebuilt = load_cli(RunConfig, argv).model
            assert rebuilt == r.cfg or (tuple(rebuilt.attention_layers) == tuple(r.cfg.attention_layers)
                                        and training_flops_per_token(rebuilt) == training_flops_per_token(r.cfg))


def test_the_screen_has_at_least_eight_mixer_variants_each_a_different_model():
    proto = P.load_protocol(SCREEN)
    variants = [s for s in proto.shapes if s.family == "mixer"]
    assert len(variants) >= 9  # the flat mixer plus eight or more variants
    shapes = {(s.heads, tuple(s.layers), tuple(sorted((k, str(v)) for k, v in s.options.items()))) for s in variants}
    assert len(shapes) == len(variants)
    assert proto.protocol.n_ctx == [512] and len(proto.protocol.lrs) >= 5


def test_subset_runs_go_lr_major_and_refuse_unknown_labels_and_lrs(tmp_path):
    proto = P.load_protocol(SCREEN)
    proto.protocol.runs_dir = str(tmp_path)
    runs = S.subset_runs(proto, ["llama", "mixer-gate"], [4e-3, 2e-3])
    assert [(r.lr, r.label) for r in runs] == [(4e-3, "llama"), (4e-3, "mixer-gate"), (2e-3, "llama"),
                                               (2e-3, "mixer-gate")]
    with pytest.raises(ConfigError, match="'mixr' is not a shape label"):
        S.subset_runs(proto, ["mixr"], [4e-3])
    with pytest.raises(ConfigError, match="0.003 is not in protocol.lrs"):
        S.subset_runs(proto, ["llama"], [3e-3])
    assert S.main(["--config", str(SCREEN), "--labels", "llama", "--lrs", "x"]) == 2
