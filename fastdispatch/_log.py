"""The ``fastdispatch`` logger; ``FASTDISPATCH_LOG=debug|info|warning`` sets its level.

Nothing on the hot path logs: only misses, compiles and fallbacks do.
"""
from __future__ import annotations

import logging

from fastdispatch.knobs import knobs


def configure_logging() -> None:
    """Apply ``knobs.log_level`` to the ``fastdispatch`` logger (with a stderr handler if none)."""
    logger = logging.getLogger("fastdispatch")
    level = getattr(logging, knobs.log_level.upper(), logging.WARNING)
    logger.setLevel(level)
    if level <= logging.INFO and not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
