"""One process vs two ranks (torchrun, gloo) at ZeRO 0/2/3 with the same global batch: equal losses; and the
export of any stage loads into the bare model class with the same weights."""
from __future__ import annotations

import pytest
import torch

from pretrain.export import export, load_model
from stackcore.rundir import read_metrics
from train_fixtures import losses, reference_run


@pytest.mark.parametrize("zero", [0, 2, 3])
def test_two_ranks_match_one_process(tmp_path_factory, zero):
    one = reference_run(tmp_path_factory, 1, 0)
    two = reference_run(tmp_path_factory, 2, zero)
    a, b = losses(one), losses(two)
    assert sorted(a) == sorted(b) == list(range(1, 7))
    for step in a:
        assert abs(a[step] - b[step]) < 1e-5, (step, a[step], b[step])
    val_a = [r["val_loss"] for r in read_metrics(one) if "val_loss" in r]
    val_b = [r["val_loss"] for r in read_metrics(two) if "val_loss" in r]
    assert len(val_a) == 2 and val_a == pytest.approx(val_b, abs=1e-5)
    assert a[6] < a[1]  # it learns


@pytest.mark.parametrize("zero", [2, 3])
def test_export_from_zero_stages_equals_single_process(tmp_path_factory, tmp_path, zero):
    one, _ = load_model(export(reference_run(tmp_path_factory, 1, 0), tmp_path / "one"))
    three, cfg = load_model(export(reference_run(tmp_path_factory, 2, zero), tmp_path / "three"))
    assert cfg.deepspeed.zero_stage == zero and cfg.model.d_model == 32
    sd1, sd3 = one.state_dict(), three.state_dict()
    assert sd1.keys() == sd3.keys()
    for key in sd1:
        assert sd3[key].dtype == torch.float32
        torch.testing.assert_close(sd1[key], sd3[key], atol=1e-5, rtol=1e-4)
    x = torch.randint(0, 50000, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(one(x).logits, three(x).logits, atol=1e-4, rtol=1e-4)


def test_deepspeed_launcher_zero1_matches_one_process(tmp_path_factory, tmp_path):
    import subprocess

    from pretrain.distributed import free_port
    from train_fixtures import PY, REPO_ROOT, child_env, prepped_corpus, run_args

    args = run_args(prepped_corpus(tmp_path_factory), tmp_path, "ds", "--deepspeed.zero_stage", "1",
                    "--train.steps", "6", "--checkpoint.every", "0")
    launcher = [PY, "-m", "deepspeed.launcher.runner", "--num_gpus", "2", "--master_port", str(free_port()),
                "--module", "pretrain.train"]
    done = subprocess.run(launcher + args, cwd=REPO_ROOT, env=child_env(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    a, b = losses(reference_run(tmp_path_factory, 1, 0)), losses(tmp_path / "ds")
    assert sorted(b) == list(range(1, 7)) and all(abs(a[s] - b[s]) < 1e-5 for s in a)
