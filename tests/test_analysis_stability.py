"""Stability metrics on synthetic curves with planted spikes, and the flexibility report on run dirs."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from eval.flexibility import flexibility_report, main as flexibility_main, variant
from eval.runs import load_run
from eval.stability import spike_mask, stability, stability_of_rows


def _smooth(n=200, seed=0):
    rng = np.random.default_rng(seed)
    return list(8.0 * np.exp(-np.arange(n) / 40) + 2.0 + 0.02 * rng.standard_normal(n))


def test_smooth_curve_has_no_spikes():
    s = stability(_smooth(), [1.0] * 200)
    assert s.stable and s.spike_steps == 0 and s.nonfinite_steps == 0 and s.max_grad_norm == 1.0


def test_planted_spikes_are_counted():
    losses = _smooth()
    best_before = min(losses[:120])
    losses[120] = 1.6 * best_before  # one-step spike (just over 1.5x)
    for i in range(150, 155):  # a five-step spike
        losses[i] = 3 * best_before
    losses[170] = 1.4 * min(losses[:170])  # under the threshold: not a spike
    grads = [1.0] * 200
    grads[150] = 42.0
    s = stability(losses, grads, steps=list(range(1000, 1200)))
    assert s.spike_steps == 6 and s.spike_events == 2
    assert s.first_spike_step == 1120 and s.max_grad_norm == 42.0 and not s.stable


def test_running_minimum_uses_only_earlier_steps():
    # the loss falls fast; a value 1.5x above a *later* minimum is not a spike
    assert spike_mask([10.0, 4.0, 2.0, 3.5, 2.9]) == [False, False, False, True, False]
    assert spike_mask([3.0]) == [False]


def test_nonfinite_steps_counted_and_excluded_from_minimum():
    losses = [5.0, 4.0, math.nan, math.inf, 3.9, None]
    grads = [1.0, 2.0, math.nan, 1.0, math.inf, None]
    s = stability(losses, grads)
    assert s.nonfinite_steps == 3 and s.spike_steps == 0 and s.max_grad_norm == 2.0 and s.min_loss == 3.9
    with pytest.raises(ValueError, match="grad norms"):
        stability([1.0, 2.0], [1.0])


def test_rows_with_string_nan_and_eval_only_rows():
    rows = [{"step": 1, "train_loss": 5.0, "grad_norm": 1.0}, {"step": 1, "val_loss": 5.1},
            {"step": 2, "train_loss": "NaN", "grad_norm": "inf"}, {"step": 3, "train_loss": 9.0, "grad_norm": 3.0}]
    s = stability_of_rows(rows)
    assert s.steps == 3 and s.nonfinite_steps == 1 and s.spike_steps == 1 and s.first_spike_step == 3


def _write_run(root, name, model, losses, flops_per_step=1e9, val_every=10):
    run = root / name
    run.mkdir(parents=True)
    body = "\n".join(f"{k} = {json.dumps(v)}" for k, v in model.items())
    run.joinpath("config.toml").write_text(f'[run]\nname = "{name}"\n\n[model]\n{body}\n\n[train]\nlr = 0.001\n')
    rows = []
    for i, loss in enumerate(losses, start=1):
        row = {"step": i, "tokens": i * 100, "flops": i * flops_per_step, "train_loss": loss, "grad_norm": 1.0}
        if i % val_every == 0:
            row["val_loss"] = loss + 0.1
        rows.append(row)
    run.joinpath("metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


def test_flexibility_report_rows_budget_and_files(tmp_path):
    sweep = tmp_path / "sweep"
    smooth = _smooth(100)
    spiky = list(smooth)
    spiky[60:70] = [20.0] * 10
    _write_run(sweep, "mixer_full", {"family": "mixer"}, smooth)
    _write_run(sweep, "llama_nonorm", {"family": "llama", "norm": False}, spiky, flops_per_step=2e9)
    _write_run(sweep, "mixer_linear", {"family": "mixer", "linear": True, "norm": False}, smooth[:50])
    rows = flexibility_report(sorted(sweep.iterdir()), tmp_path / "out")
    by = {r["run"]: r for r in rows}
    # budget = the smallest final validation FLOPs among runs that finished: mixer_linear at 50 steps
    assert rows[0]["budget_flops"] == pytest.approx(50e9)
    assert by["llama_nonorm"]["val_loss_at_budget"] == pytest.approx(smooth[24] + 0.1, rel=0.05)
    assert by["mixer_full"]["val_loss_at_budget"] == pytest.approx(smooth[49] + 0.1)
    assert by["llama_nonorm"]["spike_steps"] == 10 and not by["llama_nonorm"]["stable"]
    assert by["mixer_full"]["stable"] and by["mixer_linear"]["variant"] == "mixer linear no-norm"
    assert "llama no-norm" in (tmp_path / "out" / "report.md").read_text()
    assert (tmp_path / "out" / "training_loss.png").stat().st_size > 1000
    assert json.loads((tmp_path / "out" / "flexibility.json").read_text())["runs"][0]["run"] == "llama_nonorm"
    assert flexibility_main(["--sweep", str(sweep), "--out", str(tmp_path / "cli")]) == 0


def test_variant_labels(tmp_path):
    run = load_run(_write_run(tmp_path, "r", {"family": "mixer", "residual": False}, [3.0] * 10))
    assert variant(run) == "mixer no-residual"
    with pytest.raises(SystemExit, match="no run directories"):
        flexibility_main(["--sweep", str(tmp_path / "empty"), "--out", str(tmp_path / "o")])


def test_trainer_skipped_steps_count_as_nonfinite():
    """pretrain.train logs a skipped (non-finite) step as train_loss null + a cumulative skipped_steps."""
    rows = [{"step": 1, "train_loss": 5.0, "grad_norm": 1.0, "skipped_steps": 0},
            {"step": 2, "train_loss": None, "grad_norm": None, "skipped_steps": 1},
            {"step": 3, "train_loss": 4.0, "grad_norm": 2.0, "skipped_steps": 1},
            {"step": 3, "val_loss": 4.2},
            {"step": 6, "train_loss": 3.0, "grad_norm": 2.0, "skipped_steps": 3}]  # log.every = 3
    s = stability_of_rows(rows)
    assert s.nonfinite_steps == 3 and s.steps == 4 and s.max_grad_norm == 2.0 and not s.stable


def test_published_expectations_per_variant():
    from eval.flexibility import expectation

    assert "does not train" in expectation("llama no-norm")
    assert "stable" in expectation("mixer no-norm")
    assert "fails" in expectation("llama no-residual", n_layers=4)
    assert "one block" in expectation("mixer no-norm no-residual", n_layers=1)
    assert "worse than the full mixer" in expectation("mixer linear no-residual", n_layers=1)
    assert "reference" in expectation("mixer") and "reference" in expectation("llama")
