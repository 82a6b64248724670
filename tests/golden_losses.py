"""Golden losses: three fixed tiny runs (mixer, llama, gpt; fp32, one process, 30 steps, validation every
10) whose per-step train and val losses are recorded in tests/golden/{family}.json. The test re-runs them
and asserts the losses are EQUAL, so a refactor that changes any number is caught (torchtitan keeps such
tests for the same reason).

Re-record (only when a change is MEANT to move the numbers, and say so in the commit):
    .venv/bin/python tests/golden_losses.py --write
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from train_fixtures import PY, REPO_ROOT, child_env  # noqa: E402

GOLDEN_DIR = HERE / "golden"
GOLDEN_CONFIG = GOLDEN_DIR / "golden.toml"
FAMILIES = {"mixer": ["--model.heads", "1"], "llama": ["--model.heads", "4"],
            "gpt": ["--model.heads", "4", "--model.dropout", "0.1"]}


def golden_run(family: str, corpus: Path, root: Path) -> dict:
    """Runs the golden config for one family in a fresh process; returns its per-step losses."""
    args = ["--config", str(GOLDEN_CONFIG), "--model.family", family, *FAMILIES[family],
            "--data.path", str(corpus), "--run.dir", str(root), "--run.name", f"golden-{family}"]
    done = subprocess.run([PY, "-m", "pretrain.train", *args], cwd=REPO_ROOT, env=child_env(),
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"golden run {family} failed:\n{done.stderr[-3000:]}")
    from stackcore.rundir import read_metrics
    rows = read_metrics(root / f"golden-{family}")
    return {"family": family,
            "train_loss": {str(r["step"]): r["train_loss"] for r in rows if r.get("train_loss") is not None},
            "val_loss": {str(r["step"]): r["val_loss"] for r in rows if r.get("val_loss") is not None}}


def golden_path(family: str) -> Path:
    return GOLDEN_DIR / f"{family}.json"


def main() -> int:
    if sys.argv[1:] != ["--write"]:
        print(__doc__)
        return 2
    from train_fixtures import prep_corpus_into
    with tempfile.TemporaryDirectory() as tmp:
        corpus = prep_corpus_into(Path(tmp) / "prep")
        for family in FAMILIES:
            losses = golden_run(family, corpus, Path(tmp) / "runs")
            golden_path(family).write_text(json.dumps(losses, indent=1) + "\n")
            print(f"wrote {golden_path(family)}: {len(losses['train_loss'])} train, {len(losses['val_loss'])} val")
    return 0


if __name__ == "__main__":
    sys.exit(main())
