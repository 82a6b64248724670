"""Where the read-only shared folder (data/, reference/) lives: no machine paths in the project.

    $MIXERSTACK_SHARED                  when set (CI, a cluster's project space)
    <repository>/../shared              else: the folder beside the checkout

`shared_dir()` names both places in its error when neither exists, so the fix is obvious wherever the
repository was cloned.
"""
from __future__ import annotations

import os
from pathlib import Path

from stackcore.errors import UserError

SHARED_ENV = "MIXERSTACK_SHARED"
REPO_ROOT = Path(__file__).resolve().parents[1]


class SharedDirError(UserError):
    """Neither $MIXERSTACK_SHARED nor the folder beside the repository holds the shared data."""


def shared_root() -> Path:
    """$MIXERSTACK_SHARED when set, else the folder beside the repository (whether or not it exists)."""
    env = os.environ.get(SHARED_ENV, "").strip()
    return Path(env).expanduser() if env else REPO_ROOT.parent / "shared"


def shared_dir(sub: str = "") -> Path:
    """The shared folder (or its `sub` folder, e.g. "data"); a SharedDirError naming both places when it
    is in neither. An explicitly set $MIXERSTACK_SHARED that does not exist is an error too: silently
    falling back would read other data than the user pointed at."""
    env = os.environ.get(SHARED_ENV, "").strip()
    if env:
        path = Path(env).expanduser() / sub
        if not path.is_dir():
            raise SharedDirError(f"${SHARED_ENV}={env}: {path} is not a directory; point {SHARED_ENV} at the "
                                 f"shared folder (it holds data/ and reference/) or unset it to use "
                                 f"{REPO_ROOT.parent / 'shared'}")
        return path
    path = REPO_ROOT.parent / "shared" / sub
    if not path.is_dir():
        raise SharedDirError(f"shared folder not found: {path} does not exist and ${SHARED_ENV} is not set; "
                             f"put the shared folder (data/, reference/) beside the repository or set "
                             f"{SHARED_ENV}=/path/to/shared")
    return path
