"""Library log lines and warnings that tell a user of `pretrain.train` nothing, filtered once at start.
Each entry says why it is noise here; anything else still reaches the user."""
from __future__ import annotations

import logging
import warnings

# (logger name, message start): DeepSpeed's accelerator probe warns on every CPU run although the trainer
# chose the device itself (train.device) and its console header names it.
NOISY_LOG_LINES = (("DeepSpeed", "Setting accelerator to CPU"),)
# (category, message regex) of Python warnings raised inside libraries on every run.
NOISY_WARNINGS = (
    (FutureWarning, r".*torch\.cuda\.amp\..* is deprecated"),  # DeepSpeed's own AMP shims
    (UserWarning, r".*TypedStorage is deprecated"),  # DeepSpeed checkpoint code under torch >= 2
)


class _DropLines(logging.Filter):
    def __init__(self, starts: tuple[str, ...]):
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(self.starts)


_installed = False


def quiet_library_logs() -> None:
    """Installs the filters (idempotent). Filters attach to the named loggers before the libraries
    configure them, and survive their reconfiguration (logging keeps one logger object per name)."""
    global _installed
    if _installed:
        return
    by_logger: dict[str, tuple[str, ...]] = {}
    for name, start in NOISY_LOG_LINES:
        by_logger[name] = by_logger.get(name, ()) + (start,)
    for name, starts in by_logger.items():
        logging.getLogger(name).addFilter(_DropLines(starts))
    for category, message in NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    _installed = True
