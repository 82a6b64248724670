"""ZeRO-2/3 checkpoints resume at another world size through DeepSpeed's universal checkpoint: saved by 2
ranks, resumed by 1 (and back), with the same data.streams the resumed steps see the same global
batches, so their losses continue the uninterrupted run's (fp32, CPU). Real runs: torchrun for 2 ranks,
DeepSpeed's own ds_to_universal for the conversion."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from pretrain.checkpoint import UNIVERSAL_TAG
from train_fixtures import REPO_ROOT, child_env, losses, prepped_corpus, reference_run, run_args, torchrun

# the issue asks for 1e-4; the tiny runs agree far closer (measured: 0.0), and 1e-5 (as 1 vs 2 ranks in
# test_train_distributed) still catches the 5e-5 drift of DeepSpeed's shared ZeRO-3 `step` tensor
TOLERANCE = 1e-5
RESUMED_STEPS = (5, 6)


def resume_args(tmp_path_factory, root, step: int, zero: int = 2) -> list[str]:
    ckpt = root / "ref" / "checkpoints" / f"step{step:08d}"
    return run_args(prepped_corpus(tmp_path_factory), root, "ref", "--deepspeed.zero_stage", str(zero),
                    "--train.steps", "6", "--checkpoint.every", "2", "--checkpoint.keep", "5",
                    "--checkpoint.resume", str(ckpt))


def assert_continues(resumed: dict[int, float], uninterrupted: dict[int, float]) -> None:
    gaps = {s: abs(resumed[s] - uninterrupted[s]) for s in RESUMED_STEPS}
    assert max(gaps.values()) < TOLERANCE, f"resumed losses differ from the uninterrupted run: {gaps}"


@pytest.mark.parametrize("zero", [2, 3])
def test_two_ranks_resume_on_one(tmp_path_factory, tmp_path, zero):
    from pretrain.train import main
    two = reference_run(tmp_path_factory, 2, zero)
    shutil.copytree(two, tmp_path / "ref")
    args = resume_args(tmp_path_factory, tmp_path, 4, zero)
    stale = tmp_path / "ref" / "checkpoints" / "step00000004" / f".{UNIVERSAL_TAG}.partial"
    stale.mkdir()  # what a conversion killed half-way leaves: redone, never loaded
    (stale / "zero").write_bytes(b"half")
    assert main(args) == 0
    assert_continues(losses(tmp_path / "ref"), losses(two))
    universal = tmp_path / "ref" / "checkpoints" / "step00000004" / UNIVERSAL_TAG
    assert universal.is_dir() and not list(universal.parent.glob(".*partial"))
    # converted once: a second resume from the same checkpoint reuses the conversion
    stamp = universal.stat().st_mtime_ns
    assert main(args) == 0
    assert universal.stat().st_mtime_ns == stamp
    assert_continues(losses(tmp_path / "ref"), losses(two))


def test_zero2_one_rank_resumes_on_two(tmp_path_factory, tmp_path):
    one = reference_run(tmp_path_factory, 1, 2)
    shutil.copytree(one, tmp_path / "ref")
    done = subprocess.run(torchrun(2, resume_args(tmp_path_factory, tmp_path, 4)), cwd=REPO_ROOT,
                          env=child_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_continues(losses(tmp_path / "ref"), losses(one))
    assert (tmp_path / "ref" / "checkpoints" / "step00000004" / UNIVERSAL_TAG).is_dir()
