"""eval isoflop recovers known optima, scaling laws and their 10x extrapolation from synthetic U-curves,
groups by family, n_ctx, LR and budget, and reports from committed CSV rows deterministically."""
from __future__ import annotations

import json

import numpy as np
import pytest

from eval import isoflop
from eval.isoflop import fit_parabola, group_budgets, isoflop_fits, scaling_for
from stackcore.config import dump_toml


def u_curve(params, n_opt, floor, width=0.3):
    return floor + width * (np.log10(params) - np.log10(n_opt)) ** 2


def floor(budget):
    """The loss at the optimum: a power law in the budget (what the scaling fit assumes)."""
    return 20.0 * budget ** -0.05


def synthetic_points(noise=0.0, seed=0, n_ctx=64, lr=1e-3):
    """Two families, three budgets; the optimum grows as C^0.5 (mixer) and C^0.4 (llama)."""
    rng = np.random.default_rng(seed)
    pts = []
    for family, expo, coef in (("mixer", 0.5, 0.1), ("llama", 0.4, 2.0)):
        for budget in (1e15, 1e16, 1e17):
            n_opt = coef * budget ** expo
            for n in np.geomspace(n_opt / 10, n_opt * 8, 7):
                loss = u_curve(n, n_opt, floor(budget)) + noise * rng.standard_normal()
                # budgets as reached, a little scattered around the nominal value
                pts.append({"family": family, "n_ctx": n_ctx, "lr": lr, "budget": budget * rng.uniform(0.97, 1.03),
                            "params": n, "loss": float(loss), "run": f"{family}-{n_ctx}-{budget:.0e}-{n:.0f}"})
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
    # monotonic losses (a CPU sweep's mixer at 3e11 FLOPs) whose convex fit has its vertex inside the
    # sizes anyway: the smallest size is the best one measured, so the optimum is not bracketed
    sizes = [49984, 59344, 99712, 199424, 297472, 594944, 1086208]
    mono = fit_parabola(sizes, [4.2676, 4.3131, 4.4545, 4.6419, 4.9133, 5.2455, 6.9574])
    assert min(sizes) < mono["params_opt"] < max(sizes) and mono["status"].startswith("edge (the smallest size")


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
    (mixer,) = scaling_for(result, "mixer")
    (llama,) = scaling_for(result, "llama")
    assert mixer["exponent"] == pytest.approx(0.5, abs=0.05)
    assert llama["exponent"] == pytest.approx(0.4, abs=0.05)
    assert mixer["loss_exponent"] == pytest.approx(-0.05, abs=0.005)


def test_extrapolation_at_ten_times_the_largest_budget():
    result = isoflop_fits(synthetic_points())
    for family, expo, coef in (("mixer", 0.5, 0.1), ("llama", 0.4, 2.0)):
        (s,) = scaling_for(result, family)
        x = s["extrapolation"]
        largest = max(g["budget"] for g in result["groups"] if g["family"] == family)
        assert x["kind"] == "extrapolation" and x["budget"] == pytest.approx(10 * largest)
        assert x["params_opt"] == pytest.approx(coef * x["budget"] ** expo, rel=0.1)
        assert x["loss_opt"] == pytest.approx(floor(x["budget"]), rel=0.01)
    text = isoflop.report_markdown(result, "non_embedding")
    assert text.count("**extrapolation**") == 2


def test_no_extrapolation_without_two_bracketed_budgets():
    pts = [p for p in synthetic_points() if p["family"] == "mixer" and p["budget"] < 2e15]
    (s,) = isoflop_fits(pts)["scaling"]
    assert "extrapolation" not in s and s["status"].startswith("no power law: 1 of 1")
    assert "**extrapolation**" not in isoflop.report_markdown(isoflop_fits(pts), "total")


def test_n_ctx_values_are_separate_groups_and_scaling_laws():
    pts = synthetic_points(n_ctx=64) + [{**p, "n_ctx": 256, "loss": p["loss"] + 0.5, "run": p["run"] + "-256"}
                                        for p in synthetic_points(n_ctx=256)]
    result = isoflop_fits(pts)
    assert len(result["groups"]) == 12
    assert {(s["family"], s["n_ctx"]) for s in result["scaling"]} == {
        ("mixer", 64), ("mixer", 256), ("llama", 64), ("llama", 256)}
    (at256,) = scaling_for(result, "mixer", 256)
    assert at256["extrapolation"]["loss_opt"] > scaling_for(result, "mixer", 64)[0]["extrapolation"]["loss_opt"]


def lr_sweep_points():
    """Every size trained at 3 LRs; only 3e-3 reaches the U-curve, the others are worse by a size-
    dependent amount that moves the vertex when all LRs are (wrongly) pooled into one parabola."""
    pts = []
    for p in synthetic_points():
        for lr, penalty in ((1e-3, 0.05 * np.log10(p["params"])), (3e-3, 0.0), (1e-2, 0.3)):
            pts.append({**p, "lr": lr, "loss": p["loss"] + penalty, "run": f"{p['run']}-lr{lr:g}"})
    return pts


def test_best_lr_policy_takes_each_size_at_its_best_lr():
    result = isoflop_fits(lr_sweep_points(), lr_policy="best")
    assert len(result["groups"]) == 6
    for g in result["groups"]:
        assert g["lr_group"] == isoflop.BEST_LR_GROUP and len(g["points"]) == 7
        assert all(p["lr"] == 3e-3 and p["lrs_tried"] == [1e-3, 3e-3, 1e-2] for p in g["points"])
        expo, coef = (0.5, 0.1) if g["family"] == "mixer" else (0.4, 2.0)
        assert g["fit"]["params_opt"] == pytest.approx(coef * g["budget"] ** expo, rel=0.02)
    assert "| 0.003 (best of 0.001, 0.003, 0.01) |" in isoflop.report_markdown(result, "total")


def test_each_lr_policy_fits_one_parabola_per_lr():
    result = isoflop_fits(lr_sweep_points(), lr_policy="each")
    assert sorted({g["lr_group"] for g in result["groups"]}) == ["lr 0.001", "lr 0.003", "lr 0.01"]
    assert len(result["groups"]) == 18 and len(result["scaling"]) == 6
    with pytest.raises(isoflop.CompareError, match="--lr-policy 'worst'"):
        isoflop_fits(lr_sweep_points(), lr_policy="worst")


def test_cli_on_run_directories(tmp_path):
    runs = []
    for i, p in enumerate(synthetic_points()):
        run = tmp_path / f"r{i}"
        run.mkdir()
        (run / "config.toml").write_text(dump_toml({
            "run": {"name": run.name}, "model": {"family": p["family"], "n_ctx": 64},
            "data": {"val_tokens": 4096, "fingerprint": "fp", "tokenizer": "tok"},
            "train": {"budget_flops": p["budget"], "lr": p["lr"]}}))
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
    assert mixer[0]["n_ctx"] == 64 and mixer[0]["points"][0]["lr"] == 1e-3


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


def write_protocol_csv(path, points):
    """Committed rows in the lead's format (eval.protocol.CSV_FIELDS): two validation points per run,
    the last one at the final loss."""
    from eval.protocol import write_csv
    from pretrain.config import ModelConfig
    from pretrain.models.flops import param_counts
    rows = []
    for i, p in enumerate(points):
        d, layers = 32 + 16 * (i % 7), 2
        total = param_counts(ModelConfig(family=p["family"], d_model=d, n_layers=layers, n_ctx=p["n_ctx"],
                                         vocab_size=2048, heads=1))["total"]
        for step, loss in ((10, p["loss"] + 1.0), (20, p["loss"])):
            rows.append({"protocol": "t", "stage": "isoflop", "label": p["family"], "family": p["family"],
                         "n_ctx": p["n_ctx"], "lr": p["lr"], "seed": 0, "d_model": d, "n_layers": layers,
                         "heads": 1, "params": total, "step": step, "flops": p["budget"] * step / 20,
                         "val_loss": loss, "budget_flops": p["budget"], "run": p["run"]})
    write_csv(rows, path)
    return path


def test_report_from_csv_is_deterministic_and_marks_the_extrapolation(tmp_path):
    pts = synthetic_points()
    data = write_protocol_csv(tmp_path / "iso.csv", pts)
    out = tmp_path / "report" / "isoflop.md"
    text = isoflop.report_from_csv([data], out, params_kind="total", command="make it")
    first = (out.read_bytes(), out.with_suffix(".png").read_bytes())
    isoflop.report_from_csv([data], out, params_kind="total", command="make it")
    assert (out.read_bytes(), out.with_suffix(".png").read_bytes()) == first
    assert text.startswith("<!-- generated by `make it`") and text.count("**extrapolation**") == 2
    # the final row of each run is its point, not the first
    points = isoflop.csv_points(data, "total")
    assert len(points) == len(pts) and {p["run"]: p["loss"] for p in points} == {p["run"]: p["loss"] for p in pts}


def test_csv_non_embedding_params_come_from_the_shape(tmp_path):
    from pretrain.config import ModelConfig
    from pretrain.models.flops import param_counts
    data = write_protocol_csv(tmp_path / "iso.csv", synthetic_points()[:3])
    for p in isoflop.csv_points(data, "non_embedding"):
        cfg = ModelConfig(family=p["family"], d_model=p["d_model"], n_layers=p["n_layers"], n_ctx=64,
                          vocab_size=2048, heads=1)
        assert p["params"] == param_counts(cfg)["non_embedding"] < param_counts(cfg)["total"]


def test_bad_csv_is_a_usage_error_naming_the_file(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("run,family\nr1,mixer\n")
    assert isoflop.main([str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "bad.csv" in err and "missing columns" in err and "val_loss" in err
    assert isoflop.main([str(tmp_path / "absent.csv"), "--out", str(tmp_path / "o")]) == 2


def test_isoflop_results_script_names_each_familys_grid_lr_and_flags_an_edge():
    """scripts/isoflop_results.py --report: the LR mini-sweep table says which LR the grid used and
    whether it lies inside the (extended) sweep; only grid-LR runs enter the fits."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parents[1] / "scripts" / "isoflop_results.py"
    spec = importlib.util.spec_from_file_location("isoflop_results", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)

    def row(family, stage, lr, loss, run, step=10):
        return {"family": family, "stage": stage, "lr": str(lr), "val_loss": str(loss), "run": run,
                "step": str(step), "d_model": "96", "n_layers": "2"}
    rows = [row("llama", "lr", lr, loss, f"l{lr}") for lr, loss in ((2e-3, 4.6), (4e-3, 4.3), (8e-3, 4.7))]
    rows += [row("llama", "lr", 4e-3, 9.0, "l0.004", step=5)]  # an earlier validation row: not the final one
    rows += [row("mixer", "lr", lr, loss, f"m{lr}") for lr, loss in ((2e-3, 4.6), (4e-3, 4.4), (8e-3, 4.2))]
    rows += [row("llama", "isoflop", 4e-3, 4.0, "lg"), row("mixer", "isoflop", 8e-3, 4.1, "mg")]
    grid, notes = script.lr_sweep_notes(rows)
    assert grid == {"llama": 4e-3, "mixer": 8e-3}
    llama, mixer = (line for line in notes.splitlines() if line.startswith(("| llama", "| mixer")))
    assert "0.004: 4.3000" in llama and "inside the sweep" in llama
    assert "at an edge of the extended sweep" in mixer


def test_an_optimum_that_shrinks_with_compute_is_flagged():
    rows = [{"family": "mixer", "n_ctx": 128, "lr_group": "g", "budget": c,
             "fit": {"status": "ok", "params_opt": n, "loss_opt": loss}}
            for c, n, loss in ((3e11, 8.7e4, 4.27), (1e12, 6.9e4, 3.86))]
    s = isoflop.scaling_fit(rows)
    assert s["exponent"] < 0 and "not a credible scaling law" in s["note"]
    assert s["extrapolation"]["kind"] == "extrapolation"


def test_best_lr_is_chosen_on_seed_0_and_the_point_is_the_seed_mean():
    """A protocol's seeds: the LR comes from the seed-0 sweep; a lucky seed does not choose the point."""
    def point(lr, seed, loss):
        return {"family": "llama", "n_ctx": 128, "lr": lr, "seed": seed, "budget": 1e12, "params": 1000.0,
                "loss": loss, "run": f"r{lr}-{seed}"}
    points = [point(2e-3, 0, 4.0), point(4e-3, 0, 4.1), point(2e-3, 1, 4.2), point(2e-3, 2, 4.3),
              point(4e-3, 1, 3.0)]  # a stray lower seed at another LR must not win
    (chosen,) = isoflop.select_lr(points, "best")
    assert chosen["lr"] == 2e-3 and chosen["seeds"] == 3 and abs(chosen["loss"] - 4.1666666) < 1e-6


def test_protocol_labels_give_series_and_shared_runs_count_once(tmp_path):
    """Sizes protocols: `mixer-combo-s` is a point of the `mixer-combo` curve, `llama-deep` of `llama`;
    a run copied into two protocols' CSVs is one point."""
    from eval import protocol as P

    assert isoflop.series({"label": "mixer-combo-s", "family": "mixer"}) == "mixer-combo"
    assert isoflop.series({"label": "llama-deep", "family": "llama"}) == "llama-deep"  # another way of growing
    assert isoflop.series({"label": "llama-xxs", "family": "llama"}) == "llama"
    assert isoflop.series({"label": "llama", "family": "llama"}) == "llama"
    rows = [{"protocol": "a", "stage": "lr", "label": label, "family": label.split("-")[0], "n_ctx": 128, "lr": 2e-3,
             "seed": 0, "d_model": d, "n_layers": 2, "heads": 4, "params": 1000 * d, "flops_per_token": 1e6,
             "useful_flops_per_token": 1e6, "step": 10, "tokens": 1, "flops": 1e12, "flops_useful": 1e12,
             "wall_s": 1.0, "train_loss": 4.0, "val_loss": 4.0 + d / 1000, "val_bpb": "", "budget_flops": 1e12,
             "hardware": "synthetic", "run": f"{label}-d{d}"}
            for label, d in (("llama-s", 32), ("mixer-combo-s", 48))]
    P.write_csv(rows, tmp_path / "a.csv")
    P.write_csv([{**r, "protocol": "b"} for r in rows], tmp_path / "b.csv")
    points = isoflop.load_points([tmp_path / "a.csv", tmp_path / "b.csv"], "total")
    assert sorted(p["family"] for p in points) == ["llama", "mixer-combo"]
