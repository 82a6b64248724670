"""eval isoflop recovers known optima from synthetic U-curves."""
from __future__ import annotations

import json

import numpy as np
import pytest

from eval import isoflop
from eval.isoflop import fit_parabola, group_budgets, isoflop_fits
from stackcore.config import dump_toml


def u_curve(params, n_opt, floor, width=0.3):
    return floor + width * (np.log10(params) - np.log10(n_opt)) ** 2


def synthetic_points(noise=0.0, seed=0):
    """Two families, three budgets; the optimum grows as C^0.5 (mixer) and C^0.4 (llama)."""
    rng = np.random.default_rng(seed)
    pts = []
    for family, expo, coef in (("mixer", 0.5, 0.1), ("llama", 0.4, 2.0)):
        for budget in (1e15, 1e16, 1e17):
            n_opt = coef * budget ** expo
            for n in np.geomspace(n_opt / 10, n_opt * 8, 7):
                loss = u_curve(n, n_opt, 3.0 - 0.2 * np.log10(budget / 1e15)) + noise * rng.standard_normal()
                # budgets as reached, a little scattered around the nominal value
                pts.append({"family": family, "budget": budget * rng.uniform(0.97, 1.03), "params": n,
                            "loss": float(loss), "run": f"{family}-{budget:.0e}-{n:.0f}"})
    return pts


def test_parabola_vertex_is_the_known_optimum():
    n = np.geomspace(1e5, 1e8, 6)
    fit = fit_parabola(list(n), list(u_curve(n, 2e6, 2.5)))
    assert fit["status"] == "ok"
    assert fit["params_opt"] == pytest.approx(2e6, rel=1e-6)
    assert fit["loss_opt"] == pytest.approx(2.5, abs=1e-9)


def test_edges_and_too_few_points_are_said():
    n = np.geomspace(1e5, 1e6, 5)
    assert fit_parabola(list(n), list(u_curve(n, 1e8, 2.0)))["status"].startswith("edge")
    assert fit_parabola([1e5, 1e6], [3.0, 2.9])["status"].startswith("too few")
    assert "not U-shaped" in fit_parabola(list(n), list(-u_curve(n, 3e5, 2.0)))["status"]


def test_budgets_within_ten_percent_group_together():
    reps = group_budgets([1e15, 1.05e15, 0.98e15, 1e16, 1.02e16])
    assert len(set(reps)) == 2 and reps[0] == reps[1] == reps[2] and reps[3] == reps[4]


def test_recovers_optima_and_scaling_exponents():
    result = isoflop_fits(synthetic_points(noise=0.003))
    assert len(result["groups"]) == 6
    for g in result["groups"]:
        expo, coef = (0.5, 0.1) if g["family"] == "mixer" else (0.4, 2.0)
        assert g["fit"]["status"] == "ok"
        assert g["fit"]["params_opt"] == pytest.approx(coef * g["budget"] ** expo, rel=0.25)
    assert result["scaling"]["mixer"]["exponent"] == pytest.approx(0.5, abs=0.05)
    assert result["scaling"]["llama"]["exponent"] == pytest.approx(0.4, abs=0.05)


def test_cli_on_run_directories(tmp_path):
    runs = []
    for i, p in enumerate(synthetic_points()):
        run = tmp_path / f"r{i}"
        run.mkdir()
        (run / "config.toml").write_text(dump_toml({
            "run": {"name": run.name}, "model": {"family": p["family"], "n_ctx": 64},
            "data": {"val_tokens": 4096, "fingerprint": "fp", "tokenizer": "tok"},
            "train": {"budget_flops": p["budget"]}}))
        row = {"step": 10, "flops": p["budget"], "tokens": 1000, "val_loss": p["loss"],
               "params_non_embedding": p["params"]}
        (run / "metrics.jsonl").write_text(json.dumps(row) + "\n")
        runs.append(str(run))
    out = tmp_path / "iso"
    assert isoflop.main(runs + ["--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert report.count("| ok |") == 6
    assert (out / "isoflop.png").read_bytes()[:4] == b"\x89PNG"
    saved = json.loads((out / "report.json").read_text())
    mixer = [g for g in saved["groups"] if g["family"] == "mixer"]
    assert mixer[0]["fit"]["params_opt"] == pytest.approx(0.1 * mixer[0]["budget"] ** 0.5, rel=0.05)


def test_parameters_come_from_the_models_accounting(tmp_path):
    """Without recorded counts, isoflop asks pretrain.models.flops.param_counts about each run's [model]."""
    from pretrain.config import ModelConfig
    from pretrain.models.flops import param_counts
    from eval.isoflop import run_points
    runs, truth = [], []
    for d in (64, 128, 192, 256, 384, 512):
        model = {"family": "llama", "d_model": d, "n_layers": 4, "n_ctx": 128, "vocab_size": 4096, "heads": 4}
        n = param_counts(ModelConfig(**model))["non_embedding"]
        truth.append(n)
        run = tmp_path / f"d{d}"
        run.mkdir()
        (run / "config.toml").write_text(dump_toml({
            "run": {"name": run.name}, "model": model, "train": {"budget_flops": 1e15},
            "data": {"val_tokens": 4096, "fingerprint": "fp", "tokenizer": "tok"}}))
        row = {"step": 5, "flops": 1e15, "tokens": 10, "val_loss": float(u_curve(n, 1.5e6, 3.0))}
        (run / "metrics.jsonl").write_text(json.dumps(row) + "\n")
        runs.append(run)
    points = run_points(runs, "non_embedding")
    assert [p["params"] for p in points] == truth
    (group,) = isoflop_fits(points)["groups"]
    assert group["fit"]["params_opt"] == pytest.approx(1.5e6, rel=1e-6)
