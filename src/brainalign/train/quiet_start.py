"""Keep the start of ``brainalign fit`` quiet on stderr, so that a failure is one line.

Before the first step Lightning writes notes ("Seed set to 0", "GPU available: ...", tips) to
stderr through its loggers, and Python warnings about the environment (an unused ``srun``, a
deprecation inside a library). When the run then fails on bad input, the error line drowned in
them. Two measures:

- :func:`lightning_notes_to_stdout`: Lightning's loggers write their INFO notes to stdout (with
  the progress bar); their warnings and errors stay on stderr;
- :class:`HeldWarnings`: Python warnings raised before the run is under way are held back,
  shown after the first training (or validation) batch, and dropped if the run fails before
  that, when the one error line is what matters.
"""

from __future__ import annotations

import logging
import sys
import warnings
from typing import Any

__all__ = ["HeldWarnings", "lightning_notes_to_stdout"]

_LIGHTNING_LOGGERS = ("lightning.pytorch", "lightning.fabric")
_MARK = "_brainalign_notes_to_stdout"


def _below_warning(record: logging.LogRecord) -> bool:
    return record.levelno < logging.WARNING


def lightning_notes_to_stdout() -> None:
    """Send Lightning's INFO records to stdout, WARNING and above to stderr (idempotent)."""
    for name in _LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        if getattr(logger, _MARK, False):
            continue
        for handler in list(logger.handlers):
            if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stderr:
                handler.setStream(sys.stdout)
                handler.addFilter(_below_warning)
                problems = logging.StreamHandler(sys.stderr)
                problems.setLevel(logging.WARNING)
                problems.setFormatter(handler.formatter)
                logger.addHandler(problems)
        setattr(logger, _MARK, True)


class HeldWarnings:
    """Hold Python warnings from :meth:`start` until :meth:`release` (shown) or :meth:`drop`.

    Replaces ``warnings.showwarning``, the hook the warnings module documents for this; filters
    and "once" registries apply as usual.
    """

    def __init__(self) -> None:
        self.held: list[tuple[Any, ...]] = []
        self._original: Any = None

    def start(self) -> None:
        if self._original is None:
            self._original = warnings.showwarning
            warnings.showwarning = self._hold

    def _hold(self, *args: Any, **kwargs: Any) -> None:
        self.held.append((args, kwargs))

    def note(self, line: str) -> None:
        """Hold a line of text for stderr, shown (as it is) with the warnings."""
        self.held.append(((line,), {"note": True}))

    def _stop(self) -> list[tuple[Any, ...]]:
        if self._original is not None:
            warnings.showwarning = self._original
            self._original = None
        held, self.held = self.held, []
        return held

    def release(self) -> None:
        """Show the held warnings and stop holding."""
        for args, kwargs in self._stop():
            if kwargs.get("note"):
                print(args[0], file=sys.stderr)
            else:
                warnings.showwarning(*args, **kwargs)

    def drop(self) -> None:
        """Forget the held warnings and stop holding."""
        self._stop()
