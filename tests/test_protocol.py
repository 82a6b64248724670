"""The comparison protocol: LR choice with edge extension, seed runs only after their sweep, the CSV
contract, and the report recomputed from the CSV alone (known multipliers recovered, deterministic)."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from eval import protocol as P
from eval import protocol_report as R
from eval_synthetic import power_law
from stackcore import rundir

REPO = Path(__file__).resolve().parents[1]


LLAMA_AND_MIXER = """
[[shapes]]
label = "llama"
family = "llama"
d_model = 32
n_layers = 2
heads = 4
[[shapes]]
label = "mixer"
family = "mixer"
match = "llama"
heads = 1
"""


def tiny_protocol(tmp_path: Path, lrs=(1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2), *, name: str = "t", vocab: int = 2048,
                  seeds=(0, 1, 2), n_ctx: int = 32, budget: float = 1e9, extra: str = "",
                  shapes: str = LLAMA_AND_MIXER) -> Path:
    """A protocol TOML for tests; `extra` goes at the end of [protocol] (more keys or sub-tables)."""
    path = tmp_path / "p.toml"
    path.write_text(f"""
[protocol]
name = "{name}"
corpus = "tinystories/train-head.jsonl"
vocab = {vocab}
lrs = {list(lrs)}
seeds = {list(seeds)}
n_ctx = [{n_ctx}]
runs_dir = "{(tmp_path / 'runs').as_posix()}"
budget_flops = {budget:g}
hardware = "test"
{extra}
{shapes}""")
    return path


def finish(run_dir: Path, loss: float, state: str = "completed") -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    rundir.write_status(run_dir, state, 10, loss)
    (run_dir / rundir.METRICS).write_text(json.dumps({"step": 10, "tokens": 1, "flops": 1.0, "val_loss": loss}) + "\n")


def test_best_lr_and_edges():
    assert P.best_lr({1: 3.0, 2: 2.0, 4: 2.5}) == (2, "inside")
    assert P.best_lr({1: 1.0, 2: 2.0, 4: 2.5}) == (1, "low edge")
    assert P.best_lr({1: 3.0, 2: 2.0, 4: math.inf}) == (2, "inside")  # a diverged run is worse, not missing
    assert P.best_lr({1: 3.0, 2: None}) == (None, "missing")


def test_plan_extends_an_edge_and_adds_seeds_after_the_sweep(tmp_path):
    proto = P.load_protocol(tiny_protocol(tmp_path))
    first = P.plan_runs(proto)
    assert [r.stage for r in first] == ["lr"] * 10  # 5 LRs x 2 shapes, no seed runs before the sweep ends
    llama = [r for r in first if r.label == "llama"]
    for r, loss in zip(llama, [5.0, 4.0, 3.5, 3.2, 3.0]):  # best at the high edge: extend upwards
        finish(Path(proto.protocol.runs_dir) / r.name, loss)
    again = [r for r in P.plan_runs(proto) if r.label == "llama"]
    assert [r.lr for r in again if r.stage == "lr"][-1] == pytest.approx(3.2e-2)
    assert not [r for r in again if r.stage == "seeds"]
    finish(Path(proto.protocol.runs_dir) / again[-1].name, 3.1)  # the extension is worse: 1.6e-2 is inside
    seeds = [r for r in P.plan_runs(proto) if r.label == "llama" and r.stage == "seeds"]
    assert [(r.lr, r.seed) for r in seeds] == [(1.6e-2, 1), (1.6e-2, 2)]


def test_protocol_needs_five_lrs(tmp_path):
    with pytest.raises(P.ConfigError, match=">= 5 learning rates"):
        P.load_protocol(tiny_protocol(tmp_path, lrs=(1e-3, 2e-3)))


def test_a_shape_may_set_its_own_sweep_and_extends_it(tmp_path):
    path = tiny_protocol(tmp_path)
    path.write_text(path.read_text() + 'lrs = [4e-3, 8e-3, 1.6e-2, 3.2e-2, 6.4e-2]\n')  # on the mixer shape
    proto = P.load_protocol(path)
    mixer = [r for r in P.plan_runs(proto) if r.label == "mixer"]
    assert [r.lr for r in mixer] == pytest.approx([4e-3, 8e-3, 1.6e-2, 3.2e-2, 6.4e-2])
    for r, loss in zip(mixer, [3.0, 3.2, 3.4, 3.6, 3.8]):  # best at its own low edge: extend downwards
        finish(Path(proto.protocol.runs_dir) / r.name, loss)
    again = [r.lr for r in P.plan_runs(proto) if r.label == "mixer" and r.stage == "lr"]
    assert again[0] == pytest.approx(2e-3) and len(again) == 6
    path.write_text(path.read_text().replace("lrs = [4e-3, 8e-3, 1.6e-2, 3.2e-2, 6.4e-2]", "lrs = [1e-2, 2e-2]"))
    with pytest.raises(P.ConfigError, match="shape 'mixer' sets lrs"):
        P.load_protocol(path)


def synthetic_rows(k_mixer: float, shapes: tuple = ()) -> list[dict]:
    """Llama and a mixer that needs k_mixer x the FLOPs for the same loss; 3 LRs each (middle best), 3 seeds.
    `shapes`: other (label, family, k) to add (k: FLOPs needed relative to the `llama` shape)."""
    rows = []
    for label, family, k in (("llama", "llama", 1.0), ("mixer", "mixer", k_mixer), *shapes):
        for lr, offset in ((1e-3, 0.2), (2e-3, 0.0), (4e-3, 0.3)):
            for seed in ([0, 1, 2] if lr == 2e-3 else [0]):
                name = f"{label}-lr{lr:g}-s{seed}"
                for step, c in enumerate(np.geomspace(1e9, 1e12, 40), 1):
                    rows.append({"protocol": "syn", "stage": "lr" if seed == 0 else "seeds", "label": label,
                                 "family": family, "n_ctx": 32, "lr": lr, "seed": seed, "d_model": 64, "n_layers": 2,
                                 "heads": 1, "params": 1000, "flops_per_token": 1e6, "useful_flops_per_token": 5e5
                                 if family == "mixer" else 8e5, "step": step, "tokens": int(c / 1e6), "flops": c,
                                 "flops_useful": c * (0.5 if family == "mixer" else 0.8), "wall_s": float(step),
                                 "train_loss": 0.0, "val_loss": float(power_law(c, k) + offset), "val_bpb": "",
                                 "budget_flops": 1e12, "hardware": "synthetic", "run": name})
    return rows


def test_report_recovers_known_multipliers_deterministically(tmp_path):
    data = tmp_path / "syn.csv"
    P.write_csv(synthetic_rows(k_mixer=2.0), data)
    with open(data) as fh:  # the committed-data contract: outside checks read these names
        assert set(P.CSV_FIELDS) >= {"family", "n_ctx", "lr", "seed", "d_model", "n_layers", "step", "tokens",
                                     "flops", "wall_s", "train_loss", "val_loss", "hardware"}
        assert next(csv.reader(fh)) == list(P.CSV_FIELDS)
    text = R.report([data], tmp_path / "out")
    mixer_row = next(line for line in text.splitlines() if line.startswith("| mixer (mixer"))
    # the mixer needs 2x the dense FLOPs: multiplier 0.5 dense; useful FLOPs 0.5/0.8 of dense -> 0.5*0.8/0.5
    assert "| 0.002 |" in mixer_row and "0.50x" in mixer_row and "0.80x" in mixer_row
    first = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    R.report([data], tmp_path / "out")
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == first


def test_sizes_compare_with_the_same_size_llama_and_the_best_shapes_with_the_best_llama(tmp_path):
    """Rule 6: `mixer-s` is matched to `llama-s`; the summary pits each family's best shape against the
    best Llama shape. llama-s needs 4x the FLOPs of llama, mixer-s 2x: mixer-s vs llama-s = 2x ahead;
    the best Llama shape is `llama`, the best mixer shape `mixer` (k 2): 0.5x."""
    data = tmp_path / "sizes.csv"
    P.write_csv(synthetic_rows(k_mixer=2.0, shapes=(("llama-s", "llama", 4.0), ("mixer-s", "mixer", 2.0 * 1.01))), data)
    assert R.reference_for("mixer-s", {"llama", "llama-s"}) == "llama-s"
    assert R.reference_for("mixer-toeplitz", {"llama", "mixer-toeplitz"}) == "llama"
    assert R.reference_for("mixer-combo-s", {"llama", "llama-s", "mixer-combo-s"}) == "llama-s"
    text = R.report([data], tmp_path / "out")
    row = next(line for line in text.splitlines() if line.startswith("| mixer-s (mixer"))
    assert "1.98x" in row and "(vs llama-s)" in row
    summary = text.split("Each family's best shape")[1]
    best_mixer = next(line for line in summary.splitlines() if line.startswith("| mixer |"))
    assert "| mixer (mixer" in best_mixer and "0.50x" in best_mixer


def test_two_protocols_sharing_a_run_name_stay_apart(tmp_path):
    """cpu-sizes reuses cpu-ctx's runs under the same names: each protocol keeps its own curves."""
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    rows = synthetic_rows(k_mixer=2.0)
    P.write_csv(rows, first)
    P.write_csv([{**r, "protocol": "syn2"} for r in rows], second)
    runs = R.curves(R.read_rows([first, second]))
    assert len(runs) == 2 * len({r["run"] for r in rows})
    assert all(len(c["y"]) == 40 for c in runs.values())  # no run holds the other protocol's points


def test_report_refuses_a_missing_file(tmp_path):
    assert R.main([str(tmp_path / "nope.csv"), "--out", str(tmp_path / "o")]) == 2


def test_the_sizes_protocol_has_three_widths_two_depths_and_matches_each_llama_at_its_depth(tmp_path):
    """Rule 6 (docs/protocol.md): configs/protocol/cpu-sizes.toml, planned from nothing."""
    from pretrain.models.flops import training_flops_per_token

    proto = P.load_protocol(Path(__file__).resolve().parents[1] / "configs" / "protocol" / "cpu-sizes.toml")
    proto.protocol.runs_dir = str(tmp_path)
    runs = [r for r in P.plan_runs(proto) if r.lr == proto.protocol.lrs[0]]
    for n_ctx in proto.protocol.n_ctx:
        at = {r.label: r.cfg for r in runs if r.cfg.n_ctx == n_ctx}
        for family in ("llama", "gpt", "mixer"):
            shapes = {(c.d_model, c.n_layers) for label, c in at.items() if c.family == family}
            assert len({d for d, layers in shapes if layers == 2}) >= 3 and {layers for _, layers in shapes} == {2, 8}
        for label, cfg in at.items():
            llama = at[R.reference_for(label, set(at))]
            assert llama.family == "llama" and cfg.n_layers == llama.n_layers, label
            assert abs(training_flops_per_token(cfg) / training_flops_per_token(llama) - 1) < 0.12, label


def test_labels_split_into_variant_and_size():
    from eval.labels import reference_for, split_label
    assert split_label("mixer-combo-xs") == ("mixer-combo", "xs")
    assert split_label("llama-xxs") == ("llama", "xxs") and split_label("gpt-deep") == ("gpt", "deep")
    assert split_label("mixer-toeplitz") == ("mixer-toeplitz", "") and split_label("llama") == ("llama", "")
    assert reference_for("mixer-combo-xs", {"llama", "llama-xs"}) == "llama-xs"
    assert reference_for("mixer-l", {"llama", "llama-s"}) == "llama"


def test_sizes_summary_pools_protocols_once_and_writes_the_marked_block(tmp_path):
    """Two CSVs sharing runs (cpu-optimum-512 reuses cpu-sizes' runs) pool into one table, each run once:
    mixer-s vs llama-s = 1.98x; the best Llama shape is `llama`, the best mixer `mixer` (k 2): 0.50x."""
    from eval import sizes_summary as S

    rows = synthetic_rows(k_mixer=2.0, shapes=(("llama-s", "llama", 4.0), ("mixer-s", "mixer", 2.0 * 1.01)))
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    P.write_csv(rows, first)
    P.write_csv([{**r, "protocol": "other"} for r in rows if r["label"] in ("llama-s", "mixer-s")], second)
    doc = tmp_path / "doc.md"
    doc.write_text("intro\n<!-- sizes:begin -->\nold\n<!-- sizes:end -->\nrest\n")
    assert S.main([str(first), str(second), "--doc", str(doc)]) == 0
    text = doc.read_text()
    assert text.startswith("intro\n") and text.endswith("rest\n") and "old" not in text
    small = next(line for line in text.splitlines() if line.startswith("| llama d64 x2 |"))  # size s: first
    assert "(3 seeds)<br>1.98x" in small  # three seeds, not six: the shared runs counted once
    best = next(line for line in text.splitlines() if "best shape" in line)
    assert "0.50x [0.50-0.50] / 0.80x" in best  # dense, then useful (mixer useful 0.5 of dense, Llama 0.8)
    P.write_csv([{**r, "budget_flops": 1e13} for r in rows], second)  # same names, another budget
    assert S.main([str(first), str(second), "--doc", str(doc)]) == 0
    assert "**1e+13 FLOPs, n_ctx 32**" in doc.read_text() and "**1e+12 FLOPs, n_ctx 32**" in doc.read_text()
    assert "(3 seeds)<br>1.98x" in doc.read_text().split("1e+12 FLOPs")[1]  # not pooled across budgets
    P.write_csv([r for r in rows if r["family"] != "llama"], second)
    before = doc.read_text()
    assert S.main([str(second), "--doc", str(doc)]) == 2  # no Llama to compare with: refused
    assert doc.read_text() == before  # and the doc is untouched


def test_a_run_is_claimed_once_and_a_dead_workers_claim_is_taken_over(tmp_path):
    import subprocess
    import sys as _sys

    lock = P.claim(tmp_path, "llama-d32-lr0.001-s0")
    assert lock is not None and lock.read_text() == str(__import__("os").getpid())
    assert P.claim(tmp_path, "llama-d32-lr0.001-s0") is None  # held by a live worker (this one)
    assert P.claim(tmp_path, "another-run") is not None
    lock.unlink()
    assert P.claim(tmp_path, "llama-d32-lr0.001-s0") is not None  # released: claimable again
    dead = subprocess.run([_sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / "locks" / "crashed-run.lock"
    stale.write_text(dead.stdout.strip())  # its worker has exited
    assert P.claim(tmp_path, "crashed-run") == stale and stale.read_text() != dead.stdout.strip()
    (tmp_path / "locks" / "being-written.lock").write_text("")  # created, pid not written yet: not stale
    assert P.claim(tmp_path, "being-written") is None


def test_two_workers_on_one_plan_train_every_run_exactly_once(tmp_path):
    """Two unsharded `run` workers started together (the mistake the lock guards against) share the plan:
    every run finishes, none is trained twice, and the export has every run's rows."""
    import os
    import subprocess
    import sys as _sys

    path = tiny_protocol(tmp_path, (1e-3, 3e-3, 1e-2, 3e-2, 1e-1), name="two-workers", vocab=512, seeds=(0, 1),
                         n_ctx=16, budget=2e8, extra='evals = 2\n[protocol.train]\n"train.device" = "cpu"',
                         shapes='[[shapes]]\nlabel = "llama"\nfamily = "llama"\nd_model = 16\nn_layers = 1\nheads = 2\n')
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [_sys.executable, "-m", "eval.protocol", "run", "--config", str(path)]
    workers = [subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for _ in range(2)]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    started = [line.split("; ")[-1] for out in outputs for line in out.splitlines() if "runs left; " in line]
    assert len(started) == len(set(started)) >= 6, outputs  # 5 LRs (+ extensions) and a seed run, once each
    assert all(out.count("runs left; ") >= 1 for out in outputs)  # both workers did share the work
    proto = P.load_protocol(path)
    assert {r.name for r in P.plan_runs(proto)} == set(started)
    assert all(P.final_val_loss(Path(proto.protocol.runs_dir) / name) is not None for name in started)
    assert not list((Path(proto.protocol.runs_dir) / "locks").iterdir())  # every claim released
