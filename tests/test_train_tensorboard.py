"""Tensorboard events match metrics.jsonl (read back with EventAccumulator), tokens and FLOPs serve as
alternative x-axes, and a real `tensorboard --logdir` server on loopback serves the loss scalars."""
from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from pretrain.distributed import free_port
from stackcore.rundir import read_config, read_metrics
from train_fixtures import child_env, reference_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return reference_run(tmp_path_factory, 1, 0)


def test_events_match_metrics_jsonl(run_dir):
    rows = read_metrics(run_dir)
    acc = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/train_loss", "train/lr", "train/grad_norm", "train/tokens_per_s", "val/val_loss", "val/val_bpb",
            "by_tokens/train_loss", "by_mflops/train_loss", "by_tokens/val_loss"} <= tags
    loss = {e.step: e.value for e in acc.Scalars("train/train_loss")}
    assert loss == pytest.approx({r["step"]: r["train_loss"] for r in rows}, rel=1e-6)
    by_tokens = {e.step: e.value for e in acc.Scalars("by_tokens/train_loss")}
    assert by_tokens == pytest.approx({r["tokens"]: r["train_loss"] for r in rows}, rel=1e-6)
    by_flops = [e.step for e in acc.Scalars("by_mflops/train_loss")]
    assert by_flops == [int(r["flops"] / 1e6) for r in rows] and by_flops[-1] > by_flops[0] > 0
    val = {e.step: e.value for e in acc.Scalars("val/val_loss")}
    assert val == pytest.approx({r["step"]: r["val_loss"] for r in rows if "val_loss" in r}, rel=1e-6)
    header = (run_dir / "config.toml").read_text().splitlines()[:8]
    assert header[0].startswith("# git_commit: ") and any("deepspeed: " in h for h in header)
    assert read_config(run_dir)["model"]["d_model"] == 32
    stats = [r["layer_stats"] for r in rows if "layer_stats" in r]
    assert [r["step"] for r in rows if "layer_stats" in r] == [3, 6]
    assert stats[0]["block00_grad_norm"] > 0 and stats[0]["block01_param_norm"] > 0
    assert "layers/block00_grad_norm" in tags
    # the metrics contract
    for key in ("step", "tokens", "flops", "train_loss", "lr", "grad_norm", "tokens_per_s", "peak_mem_mb", "wall_s"):
        assert all(key in r for r in rows)


def test_tensorboard_server_serves_the_loss(run_dir):
    port = free_port()
    server = subprocess.Popen([str(__import__("sys").executable), "-m", "tensorboard.main", "--logdir",
                               str(run_dir / "tb"), "--host", "127.0.0.1", "--port", str(port)],
                              env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline, tags = time.time() + 120, {}
        while time.time() < deadline:
            assert server.poll() is None, server.stderr.read()[-2000:]
            try:
                tags = json.load(urllib.request.urlopen(f"{base}/data/plugin/scalars/tags", timeout=5))
                if tags and "train/train_loss" in next(iter(tags.values())):
                    break
            except OSError:
                pass
            time.sleep(0.5)
        assert tags, "tensorboard served no scalar tags"
        run = next(iter(tags))
        query = urllib.parse.urlencode({"run": run, "tag": "train/train_loss"})
        points = json.load(urllib.request.urlopen(f"{base}/data/plugin/scalars/scalars?{query}", timeout=10))
        served = {int(step): value for _, step, value in points}
        expected = {r["step"]: r["train_loss"] for r in read_metrics(run_dir)}
        assert served == pytest.approx(expected, rel=1e-6)
    finally:
        server.terminate()
        server.wait(timeout=30)
