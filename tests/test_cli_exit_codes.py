"""One exit-code convention across every CLI: bad input is exit 2 with one line `error: ...` on stderr
(stackcore.errors.run_cli), never a traceback or exit 1. Real subprocesses, started side by side."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from stackcore.errors import EXIT_BAD_INPUT

from conftest import REPO_ROOT


def _cases(tmp: str) -> dict[str, tuple[list[str], str]]:
    """name -> (argv after `python -m`, a fragment the message must contain: the file or key it names)."""
    missing = f"{tmp}/missing"
    return {
        "data_prep tokenize": (["data_prep", "tokenize", "--input", f"{missing}.jsonl", "--out", f"{tmp}/o"],
                               "missing.jsonl"),
        "data_prep stats": (["data_prep", "stats", missing], "missing"),
        "data_prep bad key": (["data_prep", "tokenize", "--input", "builtin:python-docs", "--out", f"{tmp}/o",
                               "--workrs", "2"], "workers"),
        "eval flops": (["eval", "flops", "--config", f"{missing}.toml"], "missing.toml"),
        "eval compare": (["eval", "compare", missing, f"{missing}2", "--out", f"{tmp}/cmp"], "missing"),
        "eval loss": (["eval", "loss", "--checkpoint", missing, "--data", missing], "missing"),
        "slurm train": (["slurm", "train", "--config", f"{missing}.toml", "--dry-run"], "missing.toml"),
        "slurm prep": (["slurm", "prep", "--array", "2", "--input", f"{missing}.jsonl", "--out", f"{tmp}/p"],
                       "missing.jsonl"),
        "slurm sweep": (["slurm", "sweep", "--grid", f"{missing}.toml", "--dry-run"], "missing.toml"),
        "slurm status": (["slurm", "status", missing], "missing"),
        "sweeps": (["sweeps", "--grid", f"{missing}.toml", "--local"], "missing.toml"),
        "pretrain.export": (["pretrain.export", missing, f"{tmp}/export"], "missing"),
        "pretrain.generate": (["pretrain.generate", "--run", missing], "missing"),
        "pretrain.train": (["pretrain.train", "--config", f"{missing}.toml"], "missing.toml"),
    }


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, tuple[int, str]]:
    tmp = str(tmp_path_factory.mktemp("cli"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    procs = {name: subprocess.Popen([sys.executable, "-m", *argv], cwd=REPO_ROOT, env=env, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for name, (argv, _) in _cases(tmp).items()}
    return {name: (p.wait(timeout=600), p.communicate()[1]) for name, p in procs.items()}


@pytest.mark.parametrize("name", list(_cases("/tmp")))
def test_bad_input_exits_2_with_one_error_line(outcomes, name):
    rc, stderr = outcomes[name]
    fragment = _cases("/tmp")[name][1]
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert rc == EXIT_BAD_INPUT, f"{name}: exit {rc}\n{stderr}"
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in stderr, f"{name}: not one error line\n{stderr}"
    assert fragment in errors[0], f"{name}: the message does not name {fragment!r}: {errors[0]}"


def test_data_prep_errors_are_user_errors():
    """Every CLI maps UserError to exit 2; data_prep's own bad-input errors are UserErrors too."""
    from data_prep.readers import InputError
    from data_prep.tasks import PrepError
    from stackcore.errors import UserError

    assert issubclass(InputError, UserError) and issubclass(InputError, ValueError)
    assert issubclass(PrepError, UserError) and issubclass(PrepError, RuntimeError)
