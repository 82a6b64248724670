"""`python -m eval representation` end to end on untrained models of real families and real text."""
from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest

from data_prep.format import MANIFEST_VERSION, encode_sample, shard_name, token_dtype
from eval.representation import heldout_windows, main as representation_main
from stackcore.atomic import atomic_write_json


def _config(tmp_path, family, name):
    path = tmp_path / f"{name}.toml"
    heads = 1 if family == "mixer" else 2
    path.write_text(f'[run]\nname = "{name}"\n\n[model]\nfamily = "{family}"\nd_model = 64\nn_layers = 2\n'
                    f'n_ctx = 16\nvocab_size = 50257\nheads = {heads}\n')
    return path


def test_untrained_mixer_and_llama_on_real_text(tmp_path, shared_data):
    out = tmp_path / "out"
    rc = representation_main(["--config", str(_config(tmp_path, "mixer", "mix")), "--config",
                              str(_config(tmp_path, "llama", "lla")), "--untrained", "--text",
                              str(shared_data / "tinystories/valid-head.txt"), "--tokenizer",
                              str(shared_data / "tokenizers/r50k_base.tiktoken"), "--samples", "3",
                              "--steps", "150", "--out", str(out)])
    assert rc == 0
    table = json.loads((out / "representation.json").read_text())
    rows = table["rows"]
    assert [(r["family"], r["depth"]) for r in rows] == [("mixer", 1), ("mixer", 2), ("llama", 1), ("llama", 2)]
    mixer_last = rows[1]
    # an untrained mixer keeps its input recoverable (published: h ~ 0)
    assert mixer_last["h_mean"] < 0.1 and len(mixer_last["per_sample"]) == 3
    assert all(0.0 <= r["h_mean"] <= 1.0 for r in rows)
    report = (out / "report.md").read_text()
    assert "| mix (untrained) | mixer | d64x2 | 2 |" in report and "| converged |" in report
    for r in rows:  # every row says how far its inversion got, and whether it got there
        assert r["final_l1"] == pytest.approx(r["l1_ratio"] * r["start_l1"]) and r["steps_run"] == 150
        assert isinstance(r["converged"], bool)
        assert f"| {r['steps_run']} | {'yes' if r['converged'] else '**no**'} |" in report
    assert (out / "representation.png").stat().st_size > 1000


def test_config_without_untrained_and_vocab_mismatch_are_named(tmp_path, shared_data):
    with pytest.raises(SystemExit, match="--untrained"):
        representation_main(["--config", str(_config(tmp_path, "mixer", "m"))])
    small = tmp_path / "small.toml"
    small.write_text('[model]\nvocab_size = 100\nn_ctx = 8\nd_model = 16\nn_layers = 1\n')
    with pytest.raises(SystemExit, match="vocab_size=100"):
        representation_main(["--config", str(small), "--untrained", "--samples", "2", "--steps", "1",
                             "--text", str(shared_data / "tinystories/valid-head.txt"), "--tokenizer", "gpt2",
                             "--out", str(tmp_path / "o")])


def _tiny_prep(root, docs, vocab=1000):
    """A prep directory in the data_prep/format.py layout: one val shard, one sample."""
    root.mkdir()
    dtype = token_dtype(vocab)
    tokens = np.concatenate(docs)
    payload = encode_sample(tokens, np.array([len(d) for d in docs]), dtype)
    name = shard_name("val", 0, 0)
    with tarfile.open(root / name, "w") as tar:
        for ext, data in payload.items():
            info = tarfile.TarInfo(f"00000-00000-000000.{ext}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    atomic_write_json(root / "manifest.json", {
        "version": MANIFEST_VERSION, "tokenizer": "toy", "vocab_size": vocab, "eos_id": 0, "ranks_sha256": "",
        "dtype": "uint16", "shards": [{"name": name, "split": "val", "task": 0, "seq": 0}], "totals": {}})
    return root


def test_heldout_windows_pack_the_val_split(tmp_path):
    prep = _tiny_prep(tmp_path / "prep", [np.arange(1, 11), np.arange(20, 31)])
    ids = heldout_windows(prep, n_ctx=4, n=5)
    assert ids.tolist()[0] == [1, 2, 3, 4] and ids.tolist()[2] == [9, 10, 20, 21]
    with pytest.raises(SystemExit, match="fewer than 9 x 4"):
        heldout_windows(prep, n_ctx=4, n=9)


def test_until_converged_runs_on_and_marks_rows(tmp_path, shared_data):
    out = tmp_path / "out"
    args = ["--config", str(_config(tmp_path, "mixer", "mix")), "--untrained", "--text",
            str(shared_data / "tinystories/valid-head.txt"), "--tokenizer",
            str(shared_data / "tokenizers/r50k_base.tiktoken"), "--samples", "2", "--depths", "last",
            "--steps", "100", "--out", str(out)]
    with pytest.raises(SystemExit, match="--max-steps 100 must exceed --steps 100"):
        representation_main(args + ["--until-converged", "--max-steps", "100"])
    assert representation_main(args + ["--until-converged", "--max-steps", "3000"]) == 0
    (row,) = json.loads((out / "representation.json").read_text())["rows"]
    assert row["converged"] and 100 < row["steps_run"] < 3000 and row["l1_ratio"] < 0.1
    report = (out / "report.md").read_text()
    assert "until converged or 3000 steps" in report and "h after 100 steps (converged then?)" in report
    assert 0.0 <= row["h_schedule_mean"] <= 1.0 and isinstance(row["schedule_converged"], bool)
