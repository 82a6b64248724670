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
    assert S.main(["--config", str(SCREEN), "--labels", "llama"]) == 2  # the LR stage needs --lrs
    assert S.subset_runs(proto, ["llama"], [], "seeds") == []  # no seed run before its sweep finished


def synthetic_screen(path: Path) -> None:
    """improve-screen rows with known answers: the Llama; mixer-gate needing 0.5x its FLOPs (ahead,
    multiplier 2), mixer-decay 2x (behind, 0.5); 3 LRs each, the middle best, seed 0."""
    from eval_synthetic import power_law
    import numpy as np

    rows = []
    for label, family, k in (("llama", "llama", 1.0), ("mixer-gate", "mixer", 0.5), ("mixer-decay", "mixer", 2.0)):
        for lr, offset in ((2e-3, 0.2), (4e-3, 0.0), (8e-3, 0.3)):
            for step, c in enumerate(np.geomspace(1e9, 1e12, 30), 1):
                rows.append({"protocol": "improve-screen", "stage": "lr", "label": label, "family": family,
                             "n_ctx": 512, "lr": lr, "seed": 0, "d_model": 64, "n_layers": 2, "heads": 1,
                             "params": 1000, "flops_per_token": 1e6, "useful_flops_per_token": 1e6, "step": step,
                             "tokens": int(c / 1e6), "flops": c, "flops_useful": c, "wall_s": float(step),
                             "train_loss": 0.0, "val_loss": float(power_law(c, k) + offset), "val_bpb": "",
                             "budget_flops": 1e12, "hardware": "synthetic", "run": f"{label}-lr{lr:g}"})
    P.write_csv(rows, path)


def test_the_variant_table_is_recomputed_between_its_markers_from_the_csv(tmp_path):
    from eval import improvement_report as I

    data, doc = tmp_path / "screen.csv", tmp_path / "improvement.md"
    synthetic_screen(data)
    begin, end = I.markers(I.DEFAULT_BLOCK)
    other_begin, other_end = I.markers("study-table")
    doc.write_text(f"# hand-written\n\n{begin}\nold table\n{end}\n\nDiscussion stays.\n"
                   f"{other_begin}\nthe study's table\n{other_end}\n")
    I.report(SCREEN, data, doc)
    text = doc.read_text()
    assert text.startswith("# hand-written") and "Discussion stays.\n" in text and "old table" not in text
    assert "the study's table" in text  # another block's markers are left alone
    rows = {line.split(" | ")[1]: line for line in text.splitlines() if line.startswith("| 512 |")}
    assert len(rows) == len(P.load_protocol(SCREEN).shapes)  # every shape, run or not
    assert "| 0.004 | 1 |" in rows["mixer-gate"] and "2.00x" in rows["mixer-gate"]
    assert "0.50x" in rows["mixer-decay"] and "reference" in rows["llama"] and "not run" in rows["mixer-rows"]
    assert "Best two variants at n_ctx 512 by final loss: mixer-gate, mixer-decay." in text
    first = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    I.report(SCREEN, data, doc)  # deterministic: the doc and the plot are byte-identical
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == first
    doc.write_text("no markers\n")
    assert I.main(["--config", str(SCREEN), "--data", str(data), "--doc", str(doc)]) == 2
