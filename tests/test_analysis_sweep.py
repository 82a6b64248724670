"""configs/sweeps/flexibility.toml expands into the runs the issue asks for, each a valid run config."""
from __future__ import annotations

import torch

from pretrain.config import RunConfig
from pretrain.models import build_model
from stackcore.config import load_config
from sweeps.grid import expand, load_grid

from conftest import REPO_ROOT

GRID = REPO_ROOT / "configs/sweeps/flexibility.toml"
EXPECTED = {  # name -> (family, norm, residual, linear)
    "mixer-full": ("mixer", True, True, False),
    "mixer-nonorm": ("mixer", False, True, False),
    "mixer-noresidual": ("mixer", True, False, False),
    "mixer-linear": ("mixer", True, True, True),
    "llama-full": ("llama", True, True, False),
    "llama-nonorm": ("llama", False, True, False),
    "llama-noresidual": ("llama", True, False, False),
}


def _configs():
    out = {}
    for name, argv in expand(GRID):
        assert argv[0] == "--config"  # what pretrain.train receives: --config BASE then overrides
        out[name] = load_config(RunConfig, argv[1], argv[2:])
    return out


def test_grid_expands_into_the_seven_variants():
    runs = expand(GRID)
    assert [name for name, _ in runs] == list(EXPECTED)
    assert load_grid(GRID).dir.as_posix() == "runs/sweeps/flexibility"


def test_every_run_is_a_valid_config_at_the_same_budget_shape_and_data():
    cfgs = _configs()
    for name, cfg in cfgs.items():
        m = cfg.model
        assert (m.family, m.norm, m.residual, m.linear) == EXPECTED[name], name
        assert cfg.run.name == name and cfg.run.dir == "runs/sweeps/flexibility"
    # equal compute on the same data: one FLOP budget, one data path, one validation set, one shape
    for key in ("train.budget_flops", "data.path", "data.val_tokens", "model.d_model", "model.n_layers",
                "model.n_ctx", "train.lr", "run.seed"):
        section, field = key.split(".")
        values = {getattr(getattr(c, section), field) for c in cfgs.values()}
        assert len(values) == 1, f"{key} differs across the sweep: {values}"
    assert cfgs["mixer-full"].train.budget_flops > 0


def test_the_ablations_really_change_the_models():
    """norm = false removes every norm, residual = false changes the function, for both families."""
    torch.manual_seed(0)
    ids = torch.randint(0, 4096, (1, 8))
    outputs = {}
    for name, cfg in _configs().items():
        cfg.model.d_model, cfg.model.n_layers = 32, 2  # the wiring, not the size, is under test
        torch.manual_seed(0)
        model = build_model(cfg.model)
        norms = [m for m in model.modules() if isinstance(m, (torch.nn.LayerNorm, torch.nn.RMSNorm))]
        assert bool(norms) == (cfg.model.norm and not cfg.model.linear), name
        outputs[name] = model.forward_blocks(model.embed(ids))
    for family in ("mixer", "llama"):
        assert not torch.allclose(outputs[f"{family}-full"], outputs[f"{family}-noresidual"])


def test_linear_mixer_grid_shares_the_flexibility_runs():
    """Its full and linear runs are the flexibility sweep's (same dir, same resolved config), so a
    local run trains only the two minimal forms."""
    linear = REPO_ROOT / "configs/sweeps/linear-mixers.toml"
    flex = _configs()
    runs = {name: load_config(RunConfig, argv[1], argv[2:]) for name, argv in expand(linear)}
    assert list(runs) == ["mixer-full", "mixer-linear", "mixer-linear-min", "mixer-nearlinear-min"]
    for name in ("mixer-full", "mixer-linear"):
        assert runs[name] == flex[name]
    minimal, near = runs["mixer-linear-min"].model, runs["mixer-nearlinear-min"].model
    assert (minimal.n_layers, minimal.linear, minimal.residual) == (1, True, False)
    assert (near.n_layers, near.linear, near.norm, near.residual) == (1, False, False, False)
    model = build_model(near)
    gelus = [n for n, m in model.named_modules() if "GeluMLP" in type(m).__name__]
    assert len(gelus) == 1 and not any(isinstance(m, torch.nn.LayerNorm) for m in model.modules())


def test_vocab_matches_the_base_data_config():
    for cfg in _configs().values():
        assert cfg.model.vocab_size == 4096 and cfg.data.path.endswith("tinystories-4k")


def test_lr_follow_up_grid_differs_from_flexibility_only_in_lr():
    flex = _configs()
    grid = REPO_ROOT / "configs/sweeps/flexibility-lr.toml"
    runs = {name: load_config(RunConfig, argv[1], argv[2:]) for name, argv in expand(grid)}
    assert list(runs) == ["mixer-full-lr0.006", "mixer-nonorm-lr0.006", "llama-full-lr0.006", "llama-nonorm-lr0.006"]
    for name, cfg in runs.items():
        base = flex[name.removesuffix("-lr0.006")]
        assert cfg.train.lr == 3 * base.train.lr
        assert cfg.model == base.model and cfg.data == base.data
        assert cfg.train.budget_flops == base.train.budget_flops
