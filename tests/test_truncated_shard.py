"""A shard truncated after prep (disk trouble, a partial copy) stops a run before it trains on it: exit 2
and one message naming the shard and the repair, at the start (every shard's size against the manifest)
and whenever a shard is opened later. It used to train on the shard's head and die much later with a
raw tarfile.ReadError. Real prep output, real runs."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from data_prep.format import FormatError
from data_prep.tasks import marker_path
from pretrain.config import RunConfig
from pretrain.data import TrainLoader
from stackcore.config import load_config
from stackcore.rundir import read_metrics
from train_fixtures import PY, REPO_ROOT, child_env, prep_corpus_into, prepped_corpus, run_args

CUT_BYTES = 5000


def copy_of_prep(tmp_path_factory, tmp_path) -> tuple[Path, list[dict]]:
    copy = tmp_path / "prep"
    shutil.copytree(prepped_corpus(tmp_path_factory), copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    return copy, [s for s in manifest["shards"] if s["split"] == "train"]


def train(prep: Path, run_root: Path, name: str) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "pretrain.train", *run_args(prep, run_root, name, "--train.steps", "2")],
                          cwd=REPO_ROOT, env=child_env(), capture_output=True, text=True, timeout=300)


def test_truncated_shard_stops_the_run_at_start_and_its_repair_works(tmp_path_factory, tmp_path):
    prep, shards = copy_of_prep(tmp_path_factory, tmp_path)
    cut = shards[1]
    (prep / cut["name"]).write_bytes((prep / cut["name"]).read_bytes()[:CUT_BYTES])

    done = train(prep, tmp_path, "cut")
    assert done.returncode == 2, done.stderr[-3000:]
    assert f"{prep / cut['name']}: {CUT_BYTES} bytes but the manifest records {cut['bytes']}" in done.stderr
    marker = marker_path(prep, cut["task"])
    assert f"python -m data_prep verify {prep}" in done.stderr and str(marker) in done.stderr
    assert "--resume" in done.stderr and "Traceback" not in done.stderr
    assert read_metrics(tmp_path / "cut") == []  # not one step trained

    verify = subprocess.run([PY, "-m", "data_prep", "verify", str(prep)], cwd=REPO_ROOT, env=child_env(),
                            capture_output=True, text=True, timeout=120)
    assert verify.returncode != 0 and f"BAD {cut['name']}" in verify.stderr
    # the repair the message names: delete the shard and its task's marker, re-run the task with --resume
    (prep / cut["name"]).unlink()
    marker.unlink()
    prep_corpus_into(prep, "--resume")
    assert (prep / cut["name"]).stat().st_size == cut["bytes"]
    done = train(prep, tmp_path, "repaired")
    assert done.returncode == 0, done.stderr[-3000:]
    assert max(r["step"] for r in read_metrics(tmp_path / "repaired")) == 2


def loader_on(prep: Path, workers: int = 0) -> TrainLoader:
    cfg = load_config(RunConfig, None, ["--data.path", str(prep), "--model.n_ctx", "32", "--train.micro_batch",
                                        "2", "--data.streams", "1", "--data.shuffle_buffer", "1",
                                        "--data.workers", str(workers)])
    return TrainLoader(cfg, 0, 1)


@pytest.mark.parametrize("workers", [0, 1])
def test_shard_truncated_after_the_start_is_caught_when_opened(tmp_path_factory, tmp_path, workers):
    prep, shards = copy_of_prep(tmp_path_factory, tmp_path)
    loader = loader_on(prep, workers)  # the start check passes: nothing is damaged yet
    for shard in shards:  # then every train shard is cut (the run opens one of them first)
        (prep / shard["name"]).write_bytes((prep / shard["name"]).read_bytes()[:CUT_BYTES])
    with pytest.raises(FormatError) as caught:
        next(loader)
    # one line naming the shard and the repair, also out of a DataLoader worker (no traceback text)
    assert re.fullmatch(rf"{re.escape(str(prep))}/train-\d+-\d+\.tar: {CUT_BYTES} bytes but the manifest "
                        r"records \d+: the shard is truncated.*data_prep verify.*--resume`", str(caught.value))


def test_damage_the_size_check_cannot_see_is_named_not_a_raw_tar_error(tmp_path_factory, tmp_path):
    # a manifest that agrees with the cut sizes: only reading the tar finds the damage
    prep, shards = copy_of_prep(tmp_path_factory, tmp_path)
    manifest = json.loads((prep / "manifest.json").read_text())
    for shard in manifest["shards"]:
        if shard["split"] == "train":
            (prep / shard["name"]).write_bytes((prep / shard["name"]).read_bytes()[:CUT_BYTES])
            shard["bytes"] = CUT_BYTES
    (prep / "manifest.json").write_text(json.dumps(manifest))
    loader = loader_on(prep)
    with pytest.raises(FormatError, match=r"train-\d+-\d+\.tar: unreadable tar \(ReadError.*data_prep verify"):
        for _ in range(100):
            next(loader)
