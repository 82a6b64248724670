"""One user-error base class and one exit-code convention for every CLI of the stack.

    0  done                      2  bad input (config, data, checkpoint, arguments): retrying will not help
    1  failed (a bug, a crash)   3  preempted: a checkpoint was saved on a signal; Slurm requeues on it

Every error a user can fix by changing what they passed derives from `UserError`; its message names the
file or key and the fix. CLIs catch `UserError` once (see `run_cli`), print `error: ...` and exit 2.
"""
from __future__ import annotations

import sys
from typing import Callable

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_PREEMPTED = 3


class UserError(Exception):
    """Bad input the user can fix; the message says what is wrong, where, and how to fix it."""


def run_cli(main: Callable[[], int | None], bad_input: tuple[type[BaseException], ...] = ()) -> int:
    """Calls `main()`; a UserError (or one of the CLI's own `bad_input` types, e.g. FileNotFoundError for
    a command whose arguments are paths) becomes one line `error: message` on stderr and exit code 2."""
    try:
        code = main()
    except (UserError, *bad_input) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_OK if code is None else int(code)
