"""--init.from: a new run starts from another run's weights (export, run dir, or a checkpoint of a ZeRO
stage); init.freeze_embedding / init.freeze_blocks keep those parameters exactly where they were."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from pretrain.config import RunConfig
from pretrain.export import WEIGHTS, export
from pretrain.init import apply_init
from pretrain.models import build_model
from pretrain.train import EXIT_BAD_INPUT, main
from stackcore.config import load_cli
from train_fixtures import prepped_corpus, reference_run, run_args


def _weights(export_dir) -> dict[str, torch.Tensor]:
    return load_file(str(export_dir / WEIGHTS))


@pytest.mark.parametrize("zero", [0, 2])
def test_loaded_weights_equal_the_source(tmp_path_factory, tmp_path, zero):
    source = reference_run(tmp_path_factory, 1, zero)
    expected = _weights(export(source, tmp_path / "src"))
    for origin in (source, source / "checkpoints" / "step00000006", tmp_path / "src"):
        cfg = load_cli(RunConfig, run_args(prepped_corpus(tmp_path_factory), tmp_path, "x",
                                           "--init.from", str(origin)))
        torch.manual_seed(123)  # a different random init: every tensor must be overwritten
        model = build_model(cfg.model)
        assert apply_init(model, cfg)["frozen"] == []
        got = model.state_dict()
        assert set(got) == set(expected)
        assert all(torch.equal(got[k], expected[k]) for k in expected), origin


def test_frozen_parameters_do_not_move(tmp_path_factory, tmp_path):
    corpus = prepped_corpus(tmp_path_factory)
    source = reference_run(tmp_path_factory, 1, 0)
    args = run_args(corpus, tmp_path, "tuned", "--init.from", str(source), "--init.freeze_embedding", "true",
                    "--init.freeze_blocks", "1", "--train.steps", "3")
    assert main(args) == 0
    before, after = _weights(export(source, tmp_path / "src")), _weights(export(tmp_path / "tuned", tmp_path / "out"))
    frozen = [k for k in before if k.startswith(("embedding.", "blocks.0."))]
    trained = [k for k in before if k.startswith(("blocks.1.", "lm_head."))]
    assert frozen and trained
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    assert all(not torch.equal(before[k], after[k]) for k in trained)
    config = (tmp_path / "tuned" / "config.toml").read_text()
    assert f'from = "{source}"' in config and "freeze_blocks = 1" in config


@pytest.mark.parametrize("override, message", [
    (["--init.from", "no/such/run"], "init.from=no/such/run: no such path"),
    (["--init.freeze_blocks", "3"], "init.freeze_blocks=3 must be in [0, model.n_layers=2]"),
    (["--init.freez_blocks", "1"], "did you mean 'freeze_blocks'"),
    (["--model.d_model", "48"], "do not fit this run's model"),
])
def test_bad_init_is_one_clear_error(tmp_path_factory, tmp_path, capsys, override, message):
    corpus = prepped_corpus(tmp_path_factory)
    source = reference_run(tmp_path_factory, 1, 0)
    args = run_args(corpus, tmp_path, "bad", "--init.from", str(source), *override)
    assert main(args) == EXIT_BAD_INPUT
    assert message in capsys.readouterr().err
