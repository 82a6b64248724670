"""End to end on real parts: data_prep -> a tiny grid run locally through sweeps.local (pretrain.train,
DeepSpeed) -> eval flexibility, pretrain.generate and eval representation on the trained runs."""
from __future__ import annotations

import json

import pytest

from data_prep.__main__ import main as prep_main
from eval.flexibility import flexibility_report
from eval.representation import main as representation_main
from pretrain.generate import main as generate_main
from sweeps.grid import expand
from sweeps.local import run_local


@pytest.fixture(scope="module")
def trained_sweep(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("analysis_e2e")
    prep = root / "prep"
    assert prep_main(["tokenize", "--input", str(shared_data / "tinystories/train-head.jsonl"), "--tokenizer",
                      str(shared_data / "tokenizers/r50k_base.tiktoken"), "--out", str(prep),
                      "--val-fraction", "0.05"]) == 0
    (root / "base.toml").write_text(f"""
[model]
d_model = 16
n_layers = 2
n_ctx = 16
vocab_size = 50257
[data]
path = "{prep}"
val_tokens = 256
[train]
steps = 1000
budget_flops = 4.0e9
micro_batch = 2
global_batch = 2
warmup = 2
lr = 0.003
device = "cpu"
[log]
eval_every = 3
""")
    (root / "grid.toml").write_text(f"""
[sweep]
name = "flex-tiny"
base = "base.toml"
dir = "{root / 'runs'}"
run_name = "{{variant}}"
[variants.mixer-full]
"model.family" = "mixer"
[variants.llama-nonorm]
"model.family" = "llama"
"model.heads" = 2
"model.norm" = false
""")
    codes = run_local(root / "grid.toml")
    assert codes == {"mixer-full": 0, "llama-nonorm": 0}
    return root


def test_flexibility_report_on_trained_runs(trained_sweep):
    runs = sorted((trained_sweep / "runs").iterdir())
    rows = flexibility_report(runs, trained_sweep / "report")
    by = {r["run"]: r for r in rows}
    assert set(by) == {"mixer-full", "llama-nonorm"}
    for r in rows:
        assert r["final_val_loss"] is not None and r["state"] == "completed"
        assert r["steps"] > 0 and r["max_grad_norm"] is not None
        # equal budget: both ran until 4e9 FLOPs (the budget is the smaller of the two last validations)
        assert r["final_flops"] == pytest.approx(4.0e9, rel=0.5)
        assert r["val_loss_at_budget"] is not None
    assert by["llama-nonorm"]["variant"] == "llama no-norm"


def test_generate_cli_on_a_trained_run(trained_sweep, capsys, shared_data):
    run = trained_sweep / "runs" / "mixer-full"
    args = ["--run", str(run), "--prompt", "Once upon a time", "--max-new-tokens", "8"]
    assert generate_main(args) == 0
    first = capsys.readouterr().out
    assert generate_main(args) == 0
    assert capsys.readouterr().out == first  # greedy is deterministic
    assert first.startswith("--- mixer-full: mixer d16x2 n_ctx=16 | greedy | seed 0 |") and "Once upon a time" in first
    assert generate_main(args + ["--temperature", "0.9", "--top-k", "20", "--samples", "2"]) == 0
    assert capsys.readouterr().out.count("| T=0.9 top-k=20 |") == 2


def test_representation_on_a_trained_run(trained_sweep):
    run = trained_sweep / "runs" / "llama-nonorm"
    out = trained_sweep / "repr"
    assert representation_main(["--run", str(run), "--config", str(run / "config.toml"), "--untrained",
                                "--samples", "2", "--steps", "30", "--depths", "last", "--out", str(out)]) == 0
    rows = json.loads((out / "representation.json").read_text())["rows"]
    assert [r["model"] for r in rows] == ["llama-nonorm (trained)", "llama-nonorm (untrained)"]
    assert all(r["depth"] == 2 and 0 <= r["h_mean"] <= 1 for r in rows)
