"""A one-line progress report with rate and ETA, for long work on a terminal or in a log."""
from __future__ import annotations

import sys
import time


def format_seconds(s: float) -> str:
    s = int(max(s, 0))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f'{h}:{m:02d}:{sec:02d}' if h else f'{m:02d}:{sec:02d}'


class Progress:
    """`update(done, extra)` prints 'what done/total (pct) rate/s ETA hh:mm:ss extra'.

    On a terminal the line is rewritten in place; in a log (not a tty) one
    line is printed at most every `min_interval` seconds.
    """

    def __init__(self, what: str, total: int, start: int = 0, unit: str = 'it', stream=None,
                 min_interval: float = 10.0, enabled: bool = True):
        self.what, self.total, self.unit = what, total, unit
        self.start_done, self.t0 = start, time.time()
        self.stream = stream or sys.stderr
        self.tty = getattr(self.stream, 'isatty', lambda: False)()
        self.min_interval = 0.2 if self.tty else min_interval
        self._last = 0.0
        self.enabled = enabled

    def restart_clock(self, done: int) -> None:
        """Measure the rate (and so the ETA) from here: e.g. after a first step that compiled."""
        self.start_done, self.t0 = done, time.time()

    def line(self, done: int, extra: str = '') -> str:
        elapsed = max(time.time() - self.t0, 1e-9)
        rate = (done - self.start_done) / elapsed
        eta = (self.total - done) / rate if rate > 0 else float('inf')
        pct = 100.0 * done / max(self.total, 1)
        eta_s = format_seconds(eta) if eta != float('inf') else '--:--'
        return (f'{self.what} {done}/{self.total} ({pct:5.1f}%) {rate:.2f} {self.unit}/s '
                f'ETA {eta_s} {extra}').rstrip()

    def update(self, done: int, extra: str = '', force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.time()
        if not force and now - self._last < self.min_interval and done < self.total:
            return
        self._last = now
        text = self.line(done, extra)
        self.stream.write(('\r' + text + '\x1b[K') if self.tty else text + '\n')
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write('\n')
