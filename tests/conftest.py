"""Shared test helpers: where the read-only shared data lives.

The shared folder sits next to the repository (`<repo>/../shared`); in CI the clone lives elsewhere, so
fall back to `/work/shared`.
"""
from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """The shared folder (holds data/ and reference/)."""
    beside_repo = REPO_ROOT.parent / "shared"
    return beside_repo if beside_repo.is_dir() else Path("/work/shared")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`<shared>/data`: TinyStories, the enwiki Parquet sample and the r50k_base ranks."""
    path = shared_dir() / "data"
    if not path.is_dir():
        pytest.fail(f"shared data not found at {path}; it must sit beside the repository as ../shared/data")
    return path
