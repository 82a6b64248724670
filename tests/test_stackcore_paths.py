"""stackcore.paths: the shared folder comes from $MIXERSTACK_SHARED or beside the repository, never a
machine path; a missing one is a UserError naming both places."""
from __future__ import annotations

import pytest

from stackcore import paths
from stackcore.errors import UserError


def test_env_var_wins_over_the_folder_beside_the_repo(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    monkeypatch.setenv(paths.SHARED_ENV, str(tmp_path))
    assert paths.shared_dir("data") == tmp_path / "data"
    assert paths.shared_root() == tmp_path


def test_env_var_pointing_nowhere_is_an_error_not_a_fallback(tmp_path, monkeypatch):
    monkeypatch.setenv(paths.SHARED_ENV, str(tmp_path / "missing"))
    with pytest.raises(UserError, match=r"\$MIXERSTACK_SHARED=.*missing.*unset it"):
        paths.shared_dir("data")


def test_missing_shared_folder_names_both_places(tmp_path, monkeypatch):
    monkeypatch.delenv(paths.SHARED_ENV, raising=False)
    monkeypatch.setattr(paths, "REPO_ROOT", tmp_path / "clone")
    with pytest.raises(paths.SharedDirError) as err:
        paths.shared_dir("data")
    message = str(err.value)
    assert str(tmp_path / "shared" / "data") in message and "MIXERSTACK_SHARED" in message


def test_tokenizer_lookup_follows_the_env_var(tmp_path, monkeypatch):
    from data_prep.tokenizer import tokenizer_dirs

    monkeypatch.delenv("MIXERSTACK_TOKENIZERS", raising=False)
    monkeypatch.setenv(paths.SHARED_ENV, str(tmp_path))
    assert tokenizer_dirs() == [tmp_path / "data" / "tokenizers"]
