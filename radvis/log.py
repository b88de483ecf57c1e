"""One logging setup for every daemon, and the periodic one-line stats they print."""
from __future__ import annotations

import json
import logging
import sys
import time


def setup(level: str = "INFO", name: str = "radvis") -> logging.Logger:
    """Log to stderr as `time level daemon: message`; idempotent."""
    root = logging.getLogger()
    if not any(getattr(h, "_radvis", False) for h in root.handlers):
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(asctime)s %(levelname).1s %(name)s: %(message)s", "%H:%M:%S"))
        h._radvis = True
        root.addHandler(h)
    root.setLevel(level)
    return logging.getLogger(name)


class StatsLine:
    """Call `tick(stats_dict)` as often as you like; it logs one line every `interval_s`, e.g.
    `stats {"frames": 120, "fps": 10.0, ...}`; rates are derived for keys listed in `rates`."""

    def __init__(self, logger: logging.Logger, interval_s: float = 5.0, rates: tuple[str, ...] = ()):
        self.logger, self.interval, self.rates = logger, interval_s, rates
        self.t0 = self.last_t = time.monotonic()
        self.last_vals: dict = {}

    def due(self) -> bool:
        return time.monotonic() - self.last_t >= self.interval

    def tick(self, stats: dict, force: bool = False) -> dict | None:
        now = time.monotonic()
        if not force and now - self.last_t < self.interval:
            return None
        dt = max(now - self.last_t, 1e-9)
        line = dict(stats)
        for k in self.rates:
            if k in stats:
                line[f"{k}_per_s"] = round((stats[k] - self.last_vals.get(k, 0)) / dt, 2)
        self.last_vals = {k: stats[k] for k in self.rates if k in stats}
        self.last_t = now
        self.logger.info("stats %s", json.dumps(line, separators=(",", ":"), default=str))
        return line


class PlainProgress:
    """tqdm's interface (iterate, update, set_postfix, close) as plain lines for logs: `DESC: n/total unit (p %),
    rate unit/s, postfix` at most every `interval_s` and once at the end, each line ending in a newline (a
    log file or a pipe gets no carriage-return redraws)."""

    def __init__(self, iterable=None, *, total=None, desc: str = "", unit: str = "it", disable: bool = False,
                 interval_s: float = 10.0, file=None, **_ignored):
        self.iterable, self.desc, self.unit, self.disable = iterable, desc, unit, disable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total, self.n, self.interval_s, self.file = total, 0, interval_s, file
        self.postfix = ""
        self.t0 = self.last = time.monotonic()
        self.closed = False

    def __iter__(self):
        for x in self.iterable:
            yield x
            self.update(1)
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        if not self.disable and time.monotonic() - self.last >= self.interval_s:
            self._line()

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kw) -> None:
        kw = {**(ordered_dict or {}), **kw}
        self.postfix = ", ".join(f"{k}={v}" for k, v in kw.items())

    def set_description(self, desc: str, refresh: bool = True) -> None:
        self.desc = desc

    def _line(self) -> None:
        self.last = time.monotonic()
        dt = max(self.last - self.t0, 1e-9)
        done = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        pct = f" ({100 * self.n / self.total:.0f} %)" if self.total else ""
        post = f", {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {done} {self.unit}{pct}, {self.n / dt:.1f} {self.unit}/s{post}",
              file=self.file or sys.stderr, flush=True)

    def close(self) -> None:
        if not self.closed and not self.disable and self.n:
            self._line()
        self.closed = True


def progress(iterable=None, **kw):
    """A progress bar for long jobs (synth, offline training, the teacher cache, eval): tqdm's bar on a
    terminal, PlainProgress's periodic lines when the bar's stream (stderr) is a log file or a pipe."""
    stream = kw.get("file") or sys.stderr
    if getattr(stream, "isatty", lambda: False)():
        from tqdm import tqdm
        return tqdm(iterable, **kw)
    return PlainProgress(iterable, **kw)
