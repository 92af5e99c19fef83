"""Third-party notices that every run would print and that say nothing a user can act on: silenced by message at the
commands' entry points (:func:`quiet_known_noise`), never by category or module, so any other warning still shows.
"""

from __future__ import annotations

import logging
import re
import warnings

__all__ = ["KNOWN_LOGGERS", "KNOWN_LOG_LINES", "KNOWN_WARNINGS", "quiet_known_noise"]

#: Python warnings we know and accept, as regular expressions matched at the start of their message.
KNOWN_WARNINGS = (
    # torch's pytree deprecation, raised from inside Lightning's own collection helpers
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    # Lightning: a DataLoader with few workers; the data settings choose them for the machine
    r"The '\w+' does not have many workers which may be a bottleneck",
    # torch: more workers than the cores it counts (a shared machine); the data settings choose them
    r"This DataLoader will create \d+ worker processes in total",
)

#: Log records of Lightning we know and accept (matched at the start of the message).
KNOWN_LOG_LINES = (
    r"💡 Tip: ",  # advertisements for Lightning's cloud services
    r"`weights_only` was not set, defaulting to `False`",  # our checkpoints are resumed with weights_only=True
)


#: The loggers those records are made on.
KNOWN_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning_utilities.core.rank_zero",
    "lightning.pytorch.trainer.connectors.checkpoint_connector",
)


class _DropKnown(logging.Filter):
    def __init__(self, patterns: tuple[str, ...]) -> None:
        super().__init__()
        self.pattern = re.compile("|".join(f"(?:{p})" for p in patterns))

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.match(record.getMessage())


def quiet_known_noise() -> None:
    """Silence :data:`KNOWN_WARNINGS` and :data:`KNOWN_LOG_LINES` for this process (idempotent)."""
    for pattern in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    drop = _DropKnown(KNOWN_LOG_LINES)
    for name in KNOWN_LOGGERS:  # a logger's filter sees the records made on it (before any handler)
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropKnown) for f in logger.filters):
            logger.addFilter(drop)
