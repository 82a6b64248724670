"""Shared test helpers: where the read-only shared data lives (stackcore.paths: $MIXERSTACK_SHARED, else
the `shared/` folder beside the repository)."""
from __future__ import annotations

from pathlib import Path

import pytest

from stackcore.errors import UserError
from stackcore.paths import shared_dir

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`<shared>/data`: TinyStories, the enwiki Parquet sample and the r50k_base ranks."""
    try:
        return shared_dir("data")
    except UserError as exc:
        pytest.fail(str(exc))
