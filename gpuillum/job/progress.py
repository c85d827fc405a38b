"""A small stderr progress bar for the plate passes: count/total, rate and time left.

Our own instead of tqdm so the core install stays light; quiet when stderr is not a terminal
(logs, CI) unless asked for explicitly.
"""
from __future__ import annotations

import sys
import time


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class Progress:
    """``with Progress(total, "apply DEMO/DNA") as bar: bar.update()``, one line redrawn in place.

    ``enabled=None`` shows the bar only when ``stream`` is a terminal.
    """

    WIDTH = 24

    def __init__(self, total: int, label: str, *, enabled: bool | None = None, stream=None, min_interval: float = 0.1):
        self.total = max(int(total), 0)
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            enabled = bool(getattr(self.stream, "isatty", lambda: False)())
        self.enabled = enabled
        self.count = 0
        self.min_interval = min_interval
        self._start = time.perf_counter()
        self._last_draw = 0.0

    def __enter__(self):
        self._start = time.perf_counter()
        self._draw(force=True)
        return self

    def __exit__(self, exc_type, exc, tb):
        self._draw(force=True)
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
        return False

    def update(self, n: int = 1) -> None:
        self.count += n
        self._draw(force=self.count >= self.total)

    def line(self) -> str:
        """The text of the bar as it is drawn now."""
        elapsed = time.perf_counter() - self._start
        rate = self.count / elapsed if elapsed > 0 else 0.0
        filled = self.WIDTH * self.count // self.total if self.total else self.WIDTH
        bar = "#" * filled + "." * (self.WIDTH - filled)
        if self.count >= self.total:
            tail = f"{_clock(elapsed)} elapsed"
        elif rate > 0:
            tail = f"ETA {_clock((self.total - self.count) / rate)}"
        else:
            tail = "ETA ?"
        return f"{self.label} [{bar}] {self.count}/{self.total} {rate:.1f} img/s {tail}"

    def _draw(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if not force and now - self._last_draw < self.min_interval:
            return
        self._last_draw = now
        self.stream.write("\r" + self.line())
        self.stream.flush()
