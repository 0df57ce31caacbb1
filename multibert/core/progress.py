"""Progress of long steps (tokenizing a corpus, training a vocabulary, reading MIMIC-III tables, fitting k-means,
extracting clip features), one helper for every layer above the core.

On a terminal a ``tqdm`` bar; when stderr is not a terminal (a batch job, a log file, a pipe) a bar's carriage
returns make an unreadable log, so the same calls write one log line every ``interval`` seconds instead
("tokenizing corpus: 1.2 GB of 4.5 GB (27 %), 12.0 MB/s, 100 s").
"""

from __future__ import annotations

import logging
import sys
import time

from tqdm.auto import tqdm

log = logging.getLogger(__name__)


class LoggedProgress:
    """The subset of ``tqdm``'s interface the long steps use, reported as periodic log lines.

    Args:
        total: the amount of work (bytes when ``unit == "B"``), or None when unknown.
        desc: what is being done.
        unit: ``"B"`` for bytes (shown in MB / GB), else a plain count.
        interval: seconds between two log lines.
    """

    def __init__(self, total: float | None, desc: str, unit: str = "B", interval: float = 30.0) -> None:
        self.total, self.desc, self.unit, self.interval = total, desc, unit, interval
        self.n = 0.0
        self.start = self.last = time.monotonic()
        self.closed = False

    def update(self, n: float = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self._log(now)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._log(time.monotonic(), done=True)

    def _amount(self, value: float) -> str:
        if self.unit != "B":
            return f"{value:,.0f} {self.unit}"
        for scale, name in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
            if value >= scale:
                return f"{value / scale:.1f} {name}"
        return f"{value:.0f} B"

    def __enter__(self) -> "LoggedProgress":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _log(self, now: float, done: bool = False) -> None:
        elapsed = max(now - self.start, 1e-9)
        share = f" of {self._amount(self.total)} ({self.n / self.total:.0%})" if self.total else ""
        rate = f"{self._amount(self.n / elapsed)}/s"
        left = ""
        if self.total and 0 < self.n < self.total and not done:
            left = f", about {elapsed * (self.total - self.n) / self.n:.0f} s left"
        log.info("%s: %s%s, %s, %.0f s%s%s", self.desc, self._amount(self.n), share, rate, elapsed, left,
                 " (done)" if done else "")


def progress_bar(total: float | None, desc: str, unit: str = "B", enabled: bool = True, interval: float = 30.0):
    """A ``tqdm`` bar on a terminal, :class:`LoggedProgress` otherwise; a disabled ``tqdm`` when not ``enabled``."""
    if not enabled:
        return tqdm(total=total, disable=True)
    if sys.stderr.isatty():
        return tqdm(total=total, desc=desc, unit=unit, unit_scale=unit == "B")
    return LoggedProgress(total, desc, unit, interval)
