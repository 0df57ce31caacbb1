"""Progress of the long video steps (k-means fitting, visual-word assignment, feature extraction, the montage).

A ``tqdm`` bar when stderr is a terminal; otherwise (a batch job, a redirected log) one log line every
``log_every`` seconds and one at the end, so a long step is visible in any output. ``enabled=False`` is silent.
"""

from __future__ import annotations

import logging
import sys
import time

from tqdm.auto import tqdm

log = logging.getLogger(__name__)


class Progress:
    """Count done work out of ``total``.

    Args:
        total: units of work.
        desc: what is being done (shown on the bar and in the log lines).
        unit: name of one unit.
        enabled: ``False``: no bar, no lines.
        log_every: seconds between log lines when stderr is not a terminal.
        logger: where the lines go (the caller's module logger by default: this module's).
    """

    def __init__(
        self,
        total: int,
        desc: str,
        unit: str = "it",
        enabled: bool = True,
        log_every: float = 30.0,
        logger: logging.Logger | None = None,
    ) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.enabled = enabled
        self.log_every = log_every
        self.logger = logger or log
        self.done = 0
        self.start = self.last = time.perf_counter()
        self.bar = tqdm(total=total, desc=desc, unit=unit) if enabled and sys.stderr.isatty() else None

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.perf_counter()
        if self.enabled and (now - self.last >= self.log_every):
            self.last = now
            self._line(now)

    def _line(self, now: float) -> None:
        elapsed = now - self.start
        share = self.done / self.total if self.total else 1.0
        left = elapsed / share - elapsed if share > 0 else float("nan")
        self.logger.info(
            "%s: %d/%d %s (%.0f%%), %.0f s elapsed, about %.0f s left",
            self.desc, self.done, self.total, self.unit, 100 * share, elapsed, left,
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.enabled:
            self._line(time.perf_counter())

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
