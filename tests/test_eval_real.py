"""eval compare and eval loss on two real tiny runs trained here (a mixer and a Llama, CPU, seconds)."""
from __future__ import annotations

import json
import math
import re

import matplotlib.image
import numpy as np
import pytest

from data_prep.__main__ import main as data_prep_main
from eval import loss as loss_cli
from eval.compare import compare
from eval.loss import checkpoint_loss
from pretrain.train import main as train_main

MODELS = {"mixer": ["--model.family", "mixer", "--model.d_model", "32", "--model.heads", "1"],
          "llama": ["--model.family", "llama", "--model.d_model", "32", "--model.heads", "2"]}


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("eval-real")
    tok = root / "tok.tiktoken"
    assert data_prep_main(["train-tokenizer", "--input", str(shared_data / "tinystories/train-head.jsonl"),
                           "--vocab-size", "320", "--out", str(tok), "--max-bytes", "300000"]) == 0
    data = root / "data"
    assert data_prep_main(["tokenize", "--input", str(shared_data / "tinystories/train-head.jsonl"),
                           "--tokenizer", str(tok), "--out", str(data), "--val-fraction", "0.05",
                           "--workers", "1", "--progress", "false"]) == 0
    runs = []
    for family, model in MODELS.items():
        args = ["--run.name", family, "--run.dir", str(root / "runs"), "--data.path", str(data),
                "--data.val_tokens", "1024", "--model.n_ctx", "16", "--model.n_layers", "1",
                "--model.vocab_size", "320", "--train.steps", "24", "--train.micro_batch", "8",
                "--train.global_batch", "8", "--train.lr", "3e-3", "--train.warmup", "2", "--train.device", "cpu",
                "--log.eval_every", "6", "--checkpoint.resume", "none", *model]
        assert train_main(args) == 0
        runs.append(root / "runs" / family)
    return root, data, runs


def metrics_val(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("val_loss") is not None]


def test_compare_on_real_runs_matches_metrics(tiny_runs):
    root, _, runs = tiny_runs
    out = root / "compare"
    result = compare(runs, out)
    for name in ("report.md", "report.json", "curves.csv", "loss_vs_flops.png", "loss_vs_tokens.png",
                 "loss_vs_time.png"):
        assert (out / name).is_file(), name
    for png in out.glob("*.png"):
        image = matplotlib.image.imread(png)  # decodes, and is a real picture
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100 and image.std() > 0
    # Recompute the matched-FLOPs row from metrics.jsonl alone.
    curves = {r.name: metrics_val(r) for r in runs}
    budget = min(rows[-1]["flops"] for rows in curves.values())
    expected = {}
    for name, rows in curves.items():
        x = np.log([r["flops"] for r in rows])
        expected[name] = (float(np.interp(np.log(budget), x, [r["val_loss"] for r in rows])),
                          float(np.interp(np.log(budget), x, [r["val_bpb"] for r in rows])))
    report = (out / "report.md").read_text()
    flops_table = report.split("## Matched training FLOPs")[1].split("##")[0]
    row = [line for line in flops_table.splitlines() if line.startswith("| 16 |")]
    assert len(row) == 1
    cells = [c.strip() for c in row[0].strip("|").split("|")]
    a, b = cells[1].split()[0], cells[2].split()[0]  # family of each side
    assert float(cells[3]) == pytest.approx(budget, rel=1e-3)
    assert float(cells[4]) == pytest.approx(expected[a][0], abs=1e-4)
    assert float(cells[5]) == pytest.approx(expected[b][0], abs=1e-4)
    assert float(cells[6]) == pytest.approx(expected[a][1], abs=1e-4)
    assert float(cells[7]) == pytest.approx(expected[b][1], abs=1e-4)
    winner = a if expected[a][0] < expected[b][0] else b
    assert cells[8].startswith(winner)
    mult = re.match(r"([0-9.]+)x", cells[9])
    assert mult and float(mult.group(1)) >= 1.0
    # The FLOP axis is the models' own accounting: flops = tokens * training_flops_per_token.
    from pretrain.config import ModelConfig
    from pretrain.models.flops import training_flops_per_token
    from eval.runs import load_run
    for run in runs:
        loaded = load_run(run)
        last = loaded.val_rows()[-1]
        cfg = ModelConfig(**{k: v for k, v in loaded.model.items()})
        assert last["flops"] == pytest.approx(last["tokens"] * training_flops_per_token(cfg), rel=1e-6)
    assert result["tables"]["flops"][0]["budget"] == pytest.approx(budget)


def test_loss_of_final_checkpoint_equals_logged_val_loss(tiny_runs, capsys):
    root, data, runs = tiny_runs
    for run in runs:
        last = metrics_val(run)[-1]
        res = checkpoint_loss(run, data, progress=False)  # DeepSpeed checkpoint via the run dir
        assert res["loss"] == pytest.approx(last["val_loss"], abs=1e-4)
        assert res["bpb"] == pytest.approx(last["val_bpb"], abs=1e-4)
    from pretrain.export import export
    exported = export(runs[0], root / "export")
    out_json = root / "loss.json"
    assert loss_cli.main(["--checkpoint", str(exported), "--data", str(data), "--json", str(out_json)]) == 0
    printed = capsys.readouterr().out
    res = json.loads(out_json.read_text())
    assert f"loss {res['loss']:.4f}" in printed
    assert res["loss"] == pytest.approx(metrics_val(runs[0])[-1]["val_loss"], abs=1e-4)
    train = checkpoint_loss(exported, data, split="train", tokens=2048, progress=False)
    assert train["split"] == "train" and train["tokens"] > 1000 and math.isfinite(train["loss"])


def test_loss_errors_name_the_fix(tiny_runs, tmp_path, capsys):
    _, data, runs = tiny_runs
    assert loss_cli.main(["--checkpoint", str(tmp_path / "nope"), "--data", str(data)]) == 2
    assert "no such checkpoint" in capsys.readouterr().err
    assert loss_cli.main(["--checkpoint", str(runs[0]), "--data", str(tmp_path)]) == 2
    assert "no manifest" in capsys.readouterr().err
    assert loss_cli.main(["--checkpoint", str(runs[0]), "--data", str(data), "--split", "test"]) == 2
    assert "no shards of split 'test'" in capsys.readouterr().err
