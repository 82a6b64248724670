"""eval compare on synthetic metrics with known answers: interpolation, multipliers, seeds, refusals."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from eval import compare as compare_cli
from eval.compare import compare
from eval.curves import compute_multiplier, value_at, x_to_reach
from eval.runs import CompareError
from eval_synthetic import power_law, write_run


def loss_of(row, family):
    """The loss summary of the configuration of `family` in a table row (rows are ordered by name)."""
    return row["loss_a"] if row["a"].startswith(family) else row["loss_b"]


def test_interpolation_is_log_linear_and_never_extrapolates():
    x = np.array([1e9, 1e10, 1e11])
    y = np.array([3.0, 2.0, 1.0])
    assert value_at(x, y, np.sqrt(1e9 * 1e10)) == pytest.approx(2.5)
    assert value_at(x, y, 1e11) == pytest.approx(1.0)
    assert value_at(x, y, 1.01e11) is None and value_at(x, y, 0.99e9) is None
    assert x_to_reach(x, y, 1.5) == pytest.approx(np.sqrt(1e10 * 1e11))
    assert x_to_reach(x, y, 0.5) is None


def test_multiplier_of_two_power_laws_is_recovered():
    c = np.geomspace(1e9, 1e12, 80)
    m = compute_multiplier(c, power_law(c), c, power_law(c, k=3.0))
    assert m["a_over_b"] is None  # B never reaches A's final loss within its budget: not extrapolated
    assert 1.0 / m["b_over_a"] == pytest.approx(3.0, rel=0.01)


def test_compare_report_has_known_multiplier_and_losses(tmp_path):
    a = write_run(tmp_path, "mixer", "mixer", k=1.0, c_end=1e12)
    # B needs 2.5x the FLOPs and runs 4x longer, so it does reach A's final loss (at 2.5e12).
    b = write_run(tmp_path, "llama", "llama", k=2.5, c_end=4e12, flops_per_token=2e6, tokens_per_s=400.0)
    result = compare([a, b], tmp_path / "out")
    (row,) = result["tables"]["flops"]
    assert row["budget"] == pytest.approx(1e12)
    assert loss_of(row, "mixer")["mean"] == pytest.approx(float(power_law(1e12)), rel=1e-6)
    assert loss_of(row, "llama")["mean"] == pytest.approx(float(power_law(1e12, 2.5)), rel=1e-3)
    assert row["winner"] == "mixer d64x2"
    assert row["mult_at_loser"]["mean"] == pytest.approx(2.5, rel=0.01)
    assert row["mult_at_winner"]["mean"] == pytest.approx(2.5, rel=0.01)
    assert row["spread"] == "single seed"
    # Matched tokens: A gets 2x the tokens per FLOP, so in tokens B needs 2.5/2 = 1.25x.
    (tok,) = result["tables"]["tokens"]
    assert tok["mult_at_loser"]["mean"] == pytest.approx(1.25, rel=0.01)
    # Matched time: A processes 2.5x the tokens per second -> 1.25 * 2.5 in seconds.
    (tim,) = result["tables"]["time"]
    assert tim["mult_at_loser"]["mean"] == pytest.approx(1.25 * 2.5, rel=0.01)
    report = (tmp_path / "out" / "report.md").read_text()
    assert "2.50x" in report and f"{float(power_law(1e12)):.4f}" in report
    with open(tmp_path / "out" / "curves.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 120 and {r["family"] for r in rows} == {"mixer", "llama"}
    assert json.loads((tmp_path / "out" / "report.json").read_text())["tables"]["flops"][0]["winner"] == "mixer d64x2"
    for axis in ("flops", "tokens", "time"):
        assert (tmp_path / "out" / f"loss_vs_{axis}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_loss_at_matched_budget_is_interpolated_between_points(tmp_path):
    a = write_run(tmp_path, "a", "mixer", c_end=1e12, points=25)
    b = write_run(tmp_path, "b", "llama", k=1.5, c_end=3e11, c_start=2e9, points=17)
    (row,) = compare([a, b], tmp_path / "out")["tables"]["flops"]
    assert row["budget"] == pytest.approx(3e11)  # the shorter run's end, not extrapolated past it
    assert loss_of(row, "mixer")["mean"] == pytest.approx(float(power_law(3e11)), rel=2e-3)
    assert loss_of(row, "llama")["mean"] == pytest.approx(float(power_law(3e11, 1.5)), rel=1e-9)
    assert row["mult_at_winner"]["reached"] == 0  # b never reaches a's final loss
    assert "not reached" in (tmp_path / "out" / "report.md").read_text()


def test_seeds_give_mean_and_spread_and_say_when_inside_it(tmp_path):
    offsets = (-0.02, 0.0, 0.02)
    far = [write_run(tmp_path, f"m{s}", "mixer", seed=s, offset=o) for s, o in enumerate(offsets)]
    far += [write_run(tmp_path, f"l{s}", "llama", seed=s, k=3.0, offset=o) for s, o in enumerate(offsets)]
    (row,) = compare(far, tmp_path / "far")["tables"]["flops"]
    assert row["seeds_a"] == 3 and row["seeds_b"] == 3
    assert loss_of(row, "mixer")["mean"] == pytest.approx(float(power_law(1e12)), rel=1e-6)
    assert row["loss_a"]["max"] - row["loss_a"]["min"] == pytest.approx(0.04, rel=1e-6)
    assert row["spread"] == "outside seed spread"
    assert row["mult_at_loser"]["pairs"] == 9
    near = [write_run(tmp_path, f"nm{s}", "mixer", seed=s, offset=o) for s, o in enumerate(offsets)]
    near += [write_run(tmp_path, f"nl{s}", "llama", seed=s, k=1.02, offset=o) for s, o in enumerate(offsets)]
    (row,) = compare(near, tmp_path / "near")["tables"]["flops"]
    assert row["spread"] == "inside seed spread"
    assert "inside seed spread" in (tmp_path / "near" / "report.md").read_text()


def test_pairs_only_within_one_n_ctx(tmp_path):
    runs = [write_run(tmp_path, f"{f}{n}", f, n_ctx=n, k=1.0 if f == "mixer" else 2.0)
            for f in ("mixer", "llama") for n in (32, 128)]
    rows = compare(runs, tmp_path / "out")["tables"]["flops"]
    assert sorted((r["n_ctx"], r["a"], r["b"]) for r in rows) == [
        (32, "llama d64x2 h4", "mixer d64x2"), (128, "llama d64x2 h4", "mixer d64x2")]
    assert all(r["winner"] == "mixer d64x2" for r in rows)


@pytest.mark.parametrize("field,value,what", [("fingerprint", "fp1", "validation data"),
                                              ("tokenizer", "tok1", "tokenizers"),
                                              ("val_tokens", 8192, "validation-set sizes"),
                                              ("mode", "document", "validation sequence modes")])
def test_refuses_runs_with_different_validation_sets(tmp_path, field, value, what, capsys):
    a = write_run(tmp_path, "a", "mixer")
    b = write_run(tmp_path, "b", "llama", **{field: value})
    with pytest.raises(CompareError, match=f"refusing to compare.*{what}"):
        compare([a, b], tmp_path / "out")
    assert compare_cli.main([str(a), str(b), "--out", str(tmp_path / "out")]) == 2
    assert "refusing to compare" in capsys.readouterr().err
    assert not (tmp_path / "out" / "report.md").exists()


def test_refuses_unidentified_validation_set_unless_told(tmp_path):
    a = write_run(tmp_path, "a", "mixer")
    b = write_run(tmp_path, "b", "llama", fingerprint="")
    with pytest.raises(CompareError, match="cannot tell which validation set.*--no-data-check"):
        compare([a, b], tmp_path / "out")
    assert compare_cli.main([str(a), str(b), "--out", str(tmp_path / "out"), "--no-data-check"]) == 0


def test_run_without_validation_points_is_a_clear_error(tmp_path):
    a = write_run(tmp_path, "a", "mixer")
    (a / "metrics.jsonl").write_text('{"step": 1, "tokens": 10, "flops": 1e9, "train_loss": 5.0}\n')
    with pytest.raises(CompareError, match="no validation points"):
        compare([a], tmp_path / "out")


def test_dispatcher_runs_compare_with_time_axis_first(tmp_path, capsys):
    from eval.__main__ import main as eval_main
    a = write_run(tmp_path, "a", "mixer")
    b = write_run(tmp_path, "b", "llama", k=2.0)
    assert eval_main(["compare", str(a), str(b), "--x", "time", "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "matched time" in printed and "report:" in printed
    report = (tmp_path / "out" / "report.md").read_text()
    assert report.index("## Matched wall-clock") < report.index("## Matched training FLOPs")
