"""The suite's own hygiene: a test that fails before its cleanup must not leave daemons running into the
tests after it (conftest's `_no_leftover_processes`). Run as a real inner pytest session, in a subprocess,
with the suite's conftest."""
from __future__ import annotations

import time
from pathlib import Path

pytest_plugins = ["pytester"]

CONFTEST = Path(__file__).with_name("conftest.py")

INNER = """
import subprocess, time
from pathlib import Path

def test_fails_before_its_cleanup(tmp_path):
    # a daemon in its own session, and an orphan below it (the shape a kill -9'd supervisor leaves)
    pids = Path({pids!r})
    subprocess.Popen(["sh", "-c", f"sleep 600 & echo $! > {{pids}}.tmp; echo $$ >> {{pids}}.tmp; mv {{pids}}.tmp {{pids}}; wait"],
                     start_new_session=True)
    deadline = time.monotonic() + 60
    while not pids.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert False, "fails here, as a test that times out or asserts before stopping what it started"

def test_beside_it_passes():   # the session goes on past the failure
    pass
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"   # a killed child not yet reaped by its parent is gone in every way that matters


def test_a_failed_tests_daemons_and_their_orphans_are_killed(pytester, tmp_path):
    pids = tmp_path / "pids"
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makepyfile(test_inner=INNER.format(pids=str(pids)))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1, passed=1)
    started = [int(x) for x in pids.read_text().split()]
    assert len(started) == 2                       # the orphan-to-be (sleep) and its parent (sh)
    result.stdout.fnmatch_lines(["*conftest: killed * process(es) the test left running*"])
    deadline = time.monotonic() + 30
    while any(map(_alive, started)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(map(_alive, started)), f"left running: {[p for p in started if _alive(p)]}"
