"""Slurm launcher pieces that need no cluster: time parsing, sweep grids, job records, status, sbatch text."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from pretrain.config import SlurmSection
from slurm import jobs, launch, prep, status
from stackcore import rundir
from stackcore.config import ConfigError
from sweeps import grid as sweep_grid

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("text,minutes", [("90", 90), ("1:30", 2), ("01:00:00", 60), ("00:00:30", 1),
                                          ("2-00", 2880), ("1-01:30", 1530), ("0-00:01:01", 2)])
def test_time_minutes(text, minutes):
    assert launch.time_minutes(text) == minutes


@pytest.mark.parametrize("bad", ["", "1h", "00:00:00", "a:b"])
def test_time_minutes_rejects(bad):
    with pytest.raises(ConfigError, match="slurm.time"):
        launch.time_minutes(bad)


def test_signal_lead_must_fit_in_time_limit():
    with pytest.raises(ConfigError, match="signal_lead_s=120 must be shorter"):
        launch.check(SlurmSection(time="00:02:00", signal_lead_s=120))
    launch.check(SlurmSection(time="00:03:00", signal_lead_s=120))


def test_deal_round_robin_covers_every_task_once():
    chunks = prep.deal([0, 2, 3, 5, 7], 3)
    assert chunks == [[0, 5], [2, 7], [3]]
    assert prep.deal([1], 4) == [[1]]
    assert prep.deal([], 2) == []


def _grid(tmp_path: Path, body: str) -> Path:
    base = tmp_path / "base.toml"
    base.write_text('[model]\nfamily = "llama"\nd_model = 64\nn_layers = 2\nn_ctx = 64\nheads = 4\n'
                    '[train]\nsteps = 5\n')
    (tmp_path / "mixer.toml").write_text('[model]\nfamily = "mixer"\nheads = 1\nd_model = 64\n')
    grid = tmp_path / "grid.toml"
    grid.write_text(body)
    return grid


def _argv_dict(argv: list[str]) -> dict[str, str]:
    assert argv[0] == "--config"
    return dict(zip(argv[2::2], argv[3::2]))


def test_expand_crosses_variants_and_axes_in_order(tmp_path):
    grid = _grid(tmp_path, '''
[sweep]
name = "g"
base = "base.toml"
dir = "out/g"
run_name = "{variant}-n{model.n_ctx}-s{run.seed}"
[overrides]
"train.steps" = 7
[axes]
"model.n_ctx" = [32, 128]
"run.seed" = [0, 1]
[variants.llama]
"train.lr" = 2e-4
[variants.mixer]
config = "mixer.toml"
''')
    runs = sweep_grid.expand(grid)
    names = [n for n, _ in runs]
    assert names == ["llama-n32-s0", "llama-n32-s1", "llama-n128-s0", "llama-n128-s1",
                     "mixer-n32-s0", "mixer-n32-s1", "mixer-n128-s0", "mixer-n128-s1"]
    first = _argv_dict(runs[0][1])
    assert runs[0][1][1] == str((tmp_path / "base.toml").resolve())
    assert first["--train.steps"] == "7" and first["--train.lr"] == "0.0002"
    assert first["--run.name"] == '"llama-n32-s0"' and first["--run.dir"] == '"out/g"'
    mixer = _argv_dict(runs[-1][1])
    assert mixer["--model.family"] == '"mixer"' and mixer["--model.n_ctx"] == "128"
    # every argv loads as a RunConfig exactly as pretrain.train would load it
    from pretrain.config import RunConfig
    from stackcore.config import load_config
    cfg = load_config(RunConfig, runs[-1][1][1], runs[-1][1][2:])
    assert (cfg.model.family, cfg.model.n_ctx, cfg.run.seed, cfg.train.steps) == ("mixer", 128, 1, 7)


def test_expand_matches_flops_through_the_planner(tmp_path):
    from eval.match import plan
    from pretrain.config import RunConfig
    from pretrain.models.flops import training_flops_per_token
    from stackcore.config import load_config

    grid = _grid(tmp_path, '''
[sweep]
name = "m"
base = "base.toml"
[axes]
"model.n_ctx" = [32, 256]
[variants.llama]
[variants.mixer]
"model.family" = "mixer"
[match]
reference = "llama"
heads = [1]
''')
    runs = dict(sweep_grid.expand(grid))
    assert set(runs) == {"llama-n_ctx32", "llama-n_ctx256", "mixer-n_ctx32", "mixer-n_ctx256"}
    for n_ctx in (32, 256):
        llama = load_config(RunConfig, runs[f"llama-n_ctx{n_ctx}"][1], runs[f"llama-n_ctx{n_ctx}"][2:]).model
        mixer = load_config(RunConfig, runs[f"mixer-n_ctx{n_ctx}"][1], runs[f"mixer-n_ctx{n_ctx}"][2:]).model
        best = plan(llama, "mixer", "flops", heads=[1])[0]
        assert (mixer.d_model, mixer.n_layers, mixer.heads) == (best["d_model"], best["n_layers"], 1)
        ratio = training_flops_per_token(mixer) / training_flops_per_token(llama)
        assert 0.8 < ratio < 1.25, ratio


def test_grid_errors_name_the_problem(tmp_path):
    grid = _grid(tmp_path, '[sweep]\nname = "x"\nbase = "missing.toml"\n')
    with pytest.raises(ConfigError, match="missing.toml"):
        sweep_grid.expand(grid)
    grid = _grid(tmp_path, '[sweep]\nname = "x"\nbase = "base.toml"\nrun_name = "{variant}"\n'
                           '[axes]\n"run.seed" = [0, 1]\n[variants.a]\n')
    with pytest.raises(ConfigError, match="both named 'a'"):
        sweep_grid.expand(grid)
    grid = _grid(tmp_path, '[sweep]\nname = "x"\nbase = "base.toml"\n[axis]\n"run.seed" = [0]\n')
    with pytest.raises(ConfigError, match=r"unknown section \[axis\]"):
        sweep_grid.expand(grid)
    grid = _grid(tmp_path, '[sweep]\nname = "x"\nbase = "base.toml"\n[variants.a]\n[match]\nreference = "b"\n')
    with pytest.raises(ConfigError, match="reference = 'b' is not a variant"):
        sweep_grid.expand(grid)


@pytest.mark.parametrize("name", ["ctx-pairs.toml", "ctx-pairs-tiny.toml", "flexibility.toml"])
def test_shipped_grids_expand(name):
    path = REPO / "configs" / "sweeps" / name
    if not path.is_file():
        pytest.skip(f"{path} not in this checkout")
    runs = sweep_grid.expand(path)
    assert len(runs) == len({n for n, _ in runs}) >= 2
    if name.startswith("ctx-pairs"):
        assert len(runs) == 12  # 2 families x 3 n_ctx x 2 seeds


def test_job_records_and_status_table(tmp_path):
    run = tmp_path / "sweep" / "r1"
    jobs.record(run, "submitted", job_id="7")
    jobs.record(run, "started", job_id="7", restart=0)
    jobs.record(run, "requeued", job_id="7", restart=0)
    jobs.record(run, "started", job_id="7", restart=1)
    jobs.record(run, "completed", job_id="7", restart=1)
    (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "train_loss": 9.5}) + "\n"
                                       + json.dumps({"step": 2, "train_loss": 8.25}) + "\n{\"step\": 3, \"tra")
    (tmp_path / "sweep" / "not-a-run").mkdir()
    assert jobs.job_ids(run) == ["7"] and jobs.requeue_count(run) == 1
    rows = status.status(tmp_path / "sweep")
    assert len(rows) == 1
    row = rows[0]
    assert (row["run"], row["state"], row["job"], row["step"], row["loss"], row["requeues"]) == \
        ("r1", "COMPLETED", "7", 2, 8.25, 1)
    table = status.format_table(rows)
    assert "8.2500" in table and "COMPLETED" in table
    with pytest.raises(FileNotFoundError, match="no such directory"):
        status.find_runs(tmp_path / "nope")


def test_cli_usage_and_config_errors(tmp_path, capsys):
    from slurm.__main__ import main

    assert main([]) == 2
    assert main(["bogus"]) == 2
    bad = tmp_path / "bad.toml"
    bad.write_text("[slurm]\ntime = \"00:01:00\"\nsignal_lead_s = 90\n")
    assert main(["train", "--config", str(bad), "--dry-run"]) == 2
    assert "signal_lead_s=90" in capsys.readouterr().err
    assert main(["train", "--config", str(bad), "--trian.steps", "3", "--dry-run"]) == 2
    assert "did you mean 'train'" in capsys.readouterr().err


def test_requeue_count_sees_requeues_slurm_did_behind_the_runs_back(tmp_path):
    # A node failure: Slurm requeued job 9 twice without the task asking; the restarts reveal it.
    for restart in (0, 1, 2):
        jobs.record(tmp_path, "started", job_id="9", restart=restart)
    jobs.record(tmp_path, "completed", job_id="9", restart=2)
    # A resubmission (new job id) that asked for one requeue itself.
    jobs.record(tmp_path, "started", job_id="12", restart=0)
    jobs.record(tmp_path, "requeued", job_id="12", restart=0)
    jobs.record(tmp_path, "started", job_id="12", restart=1)
    assert jobs.job_ids(tmp_path) == ["9", "12"]
    assert jobs.requeue_count(tmp_path) == 3


def test_status_of_a_local_run_reads_the_trainers_status(tmp_path):
    run = tmp_path / "local-run"
    run.mkdir()
    (run / "config.toml").write_text("[run]\nname = 'local-run'\n")
    rundir.write_status(run, "preempted", step=3, last_loss=7.0)
    (run / "metrics.jsonl").write_text(json.dumps({"step": 3, "train_loss": 7.0}) + "\n")
    row = status.status(run)[0]
    assert (row["state"], row["job"], row["step"], row["requeues"]) == ("LOCAL PREEMPTED", "-", 3, 0)


def test_prep_bad_input_is_a_clear_error(tmp_path, capsys):
    from slurm.__main__ import main

    rc = main(["prep", "--array", "2", "--input", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "out")])
    assert rc == 2
    assert "missing.jsonl: input file not found" in capsys.readouterr().err


def _imports(path: Path) -> set[str]:
    """Top-level module names and `slurm.X` submodules a file imports (at any depth: lazy imports count)."""
    import ast

    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            if node.module == "slurm":
                names.update(f"slurm.{alias.name}" for alias in node.names)
    return names


def test_slurm_imports_go_one_way():
    """slurm/ never imports eval or the sweeps layer above it, and no two slurm modules import each other
    (jobs <-> status was a circle: both now ask slurm.accounting)."""
    modules = {p.stem: _imports(p) for p in (REPO / "slurm").glob("*.py")}
    for name, imported in modules.items():
        bad = {m for m in imported if m.split(".")[0] in ("eval", "sweeps")}
        assert not bad, f"slurm/{name}.py imports {bad}"
    edges = {(a, m.split(".")[1]) for a, imported in modules.items() for m in imported
             if m.startswith("slurm.") and m.split(".")[1] in modules}
    assert not {(a, b) for a, b in edges if (b, a) in edges}, edges
    assert "slurm.status" not in modules["jobs"] and "slurm.status" not in modules["train_task"]


def test_train_and_prep_read_launcher_flags_from_one_place(tmp_path):
    from pretrain.config import RunConfig
    from slurm import options, train_cli
    from stackcore.config import load_config

    config = tmp_path / "run.toml"
    config.write_text('[slurm]\npartition = "gpu"\ntime = "02:00:00"\n')
    _, train_argv, cfg = train_cli.resolve(["--config", str(config), "--time", "00:30:00", "--cpus-per-task", "4"])
    assert (cfg.slurm.partition, cfg.slurm.time, cfg.slurm.cpus_per_task) == ("gpu", "00:30:00", 4)
    assert load_config(RunConfig, train_argv[1], train_argv[2:]).slurm == cfg.slurm  # what the job re-reads
    args, _ = prep.parser().parse_known_args(["--array", "2", "--time", "00:30:00", "--cpus-per-task", "4"])
    section = options.prep_section(args)
    assert (section.time, section.cpus_per_task, section.max_requeues, section.tasks_per_node) == ("00:30:00", 4, 0, 1)
    assert section.partition == SlurmSection().partition  # no flag: the section's own default
    with pytest.raises(SystemExit):  # a launcher flag of the wrong type fails in argparse for both (exit 2)
        prep.parser().parse_known_args(["--array", "2", "--cpus-per-task", "many"])
