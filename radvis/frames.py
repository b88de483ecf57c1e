"""Device frame counters, shared by the drivers (drivers/ti/radar.py) and the synchroniser (sync/daemon.py).

A frame counter that goes *back* means one of two things: a late or duplicated frame (reordered by a
buffer, re-sent by a parser resynchronising), or a device restart (the counter starts again from 0).
One threshold tells them apart, everywhere: a step back of RESTART_JUMP frames or more is a restart
(10 s at the rig's 10 Hz radar, far beyond any reordering a serial port or a UDP receiver produces; a
restart soon after the start, when the counter has not reached RESTART_JUMP yet, is still found by the
clock model, whose device time then jumps off its fitted line by more than sync.restart_ms).
"""
from __future__ import annotations

RESTART_JUMP = 100


def is_restart(last: int | None, fn: int) -> bool:
    """True if frame number `fn` after `last` means the device restarted (counted from 0 again)."""
    return last is not None and last - fn >= RESTART_JUMP
