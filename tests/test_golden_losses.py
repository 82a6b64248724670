"""The golden-loss test: re-runs the fixed tiny runs and asserts per-step train and val losses EQUAL
to the recorded ones (see tests/golden_losses.py for how they are made and re-recorded)."""
from __future__ import annotations

import json

import pytest

from golden_losses import FAMILIES, golden_path, golden_run
from train_fixtures import prepped_corpus


@pytest.mark.parametrize("family", list(FAMILIES))
def test_losses_equal_golden(family, tmp_path_factory, tmp_path):
    expected = json.loads(golden_path(family).read_text())
    got = golden_run(family, prepped_corpus(tmp_path_factory), tmp_path)
    assert len(expected["train_loss"]) == 30 and len(expected["val_loss"]) == 3
    assert got["train_loss"] == expected["train_loss"], "train losses moved: see tests/golden_losses.py"
    assert got["val_loss"] == expected["val_loss"], "val losses moved: see tests/golden_losses.py"
