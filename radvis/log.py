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
