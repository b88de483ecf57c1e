"""`radvis rig`: starts the enabled stages that exist, restarts a killed one with backoff, and leaves no
process behind on Ctrl-C or after --duration. Capture stages use the fake sources of test_capture."""
from __future__ import annotations

import argparse
import json
import os
import signal
import time
from pathlib import Path

from capture.record import ScanResult, scan, segments
from rig.supervisor import has_command
from tests.test_capture import fake_sets, ipc_sets, radvis_proc


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][0] != "Z"
    except FileNotFoundError:
        return False


def _status(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "status.json").read_text())["stages"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return {}


def _wait(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _rig(tmp: Path, stages: list[str], extra: list[str]):
    run_dir = tmp / "run"
    sets = ipc_sets(tmp) + fake_sets() + [
        "--set", f"rig.stages={json.dumps(stages)}", "--set", f'rig.run_dir="{run_dir}"',
        "--set", f'record.out="{tmp / "session"}"', "--set", "rig.restart_backoff_s=0.2",
        "--set", "transport.slow_joiner_s=0.5"]
    return radvis_proc(["rig", *sets, *extra], {"RADVIS_FAKE_DIR": str(tmp)}), run_dir


def test_has_command_reads_the_parser():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers()
    cap = sub.add_parser("capture").add_subparsers()
    cap.add_parser("radar")
    sub.add_parser("record")
    assert has_command(p, ["capture", "radar"]) and has_command(p, ["record"])
    assert not has_command(p, ["capture", "camera"]) and not has_command(p, ["learn", "online"])


def test_rig_restarts_killed_stage_and_ctrl_c_leaves_nothing(tmp_path):
    p, run_dir = _rig(tmp_path, ["radar", "camera", "record"], ["--duration", "0"])
    try:
        st = _wait(lambda: (s := _status(run_dir)) and all(v["state"] == "running" for v in s.values()) and s,
                   30, "all stages running")
        assert set(st) == {"radar", "camera", "record"}
        first_pid = st["radar"]["pid"]
        # the stages really work together: the recorder is writing radar and camera frames
        _wait(lambda: (s := _status(run_dir)) and (s["record"]["rate_per_s"] or 0) > 0, 30, "recorder stats")
        os.kill(first_pid, signal.SIGKILL)
        st = _wait(lambda: (s := _status(run_dir)) and s["radar"]["restarts"] == 1 and s["radar"]["state"] == "running"
                   and s["radar"]["pid"] != first_pid and s, 30, "radar restarted")
        assert st["camera"]["restarts"] == 0 and st["record"]["restarts"] == 0
        pids = [pid for v in st.values() for pid in v["pids"]]
        p.send_signal(signal.SIGINT)  # Ctrl-C
        assert p.wait(30) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    out = p.stdout.read()
    assert "stopped (SIGINT)" in out and "stage" in out and "restarts" in out
    time.sleep(0.2)
    assert not [pid for pid in pids if _alive(pid)], "orphan stage processes"
    final = _status(run_dir)
    assert all(v["state"] == "stopped" for v in final.values())
    # the recorder was stopped with SIGTERM and finished its segment
    for path in segments(tmp_path / "session"):
        res = ScanResult()
        n = sum(1 for _ in scan(path, res))
        assert res.complete and n > 0


def test_rig_duration_stops_by_itself_and_skips_missing_or_broken_stages(tmp_path):
    # camera with a factory that does not exist: a configuration error (rc 2) is not restarted forever
    p, run_dir = _rig(tmp_path, ["radar", "camera"],
                      ["--duration", "4", "--set", 'capture.camera_open="tests.test_capture:no_such_factory"'])
    try:
        assert p.wait(60) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    st = _status(run_dir)
    assert st["camera"]["state"] == "failed" and st["camera"]["last_rc"] == 2 and st["camera"]["restarts"] == 0
    assert st["radar"]["state"] == "stopped" and st["radar"]["restarts"] == 0
    assert not [pid for v in st.values() for pid in v["pids"] if _alive(pid)]
    out = p.stdout.read()
    assert "stopped (duration 4 s)" in out
    assert "no frame source" in (run_dir / "logs" / "camera.log").read_text()


def test_start_is_downstream_first_after_ready_and_stop_is_upstream_first(tmp_path):
    """Nothing lost at either end of a run: the learner and the recorder are subscribed before sync and the
    capture stages exist, and on stop the producers go first so the consumers get everything."""
    from rig.supervisor import Supervisor
    events = tmp_path / "events"
    fake = tmp_path / "fake-python"
    # stands in for `python -m radvis <stage args>`: logs its start, a ready line (consumers, after a
    # delay), and its stop on SIGTERM
    fake.write_text(f"""#!/bin/bash
shift 2
name="$*"
echo "start $name" >> {events}
trap 'echo "stop $name" >> {events}; exit 0' TERM
case "$name" in
  learn*) sleep 0.6; echo "ready $name" >> {events}; echo "ready: subscribed to the pair stream" ;;
  record*) sleep 0.3; echo "ready $name" >> {events}; echo "recording radar=x to y" ;;
esac
while true; do sleep 0.05; done
""")
    fake.chmod(0o755)
    sup = Supervisor(["radar", "camera", "sync", "record", "learner"], common_args=[], run_dir=tmp_path / "run",
                     python=str(fake), stop_timeout_s=10)
    sup.start_all(ready_timeout_s=10)
    time.sleep(0.5)
    sup.stop()
    ev = events.read_text().split("\n")
    starts = [e.split()[1] for e in ev if e.startswith("start")]
    stops = [e.split()[1] for e in ev if e.startswith("stop")]
    assert starts == ["learn", "record", "sync", "capture", "capture"]
    assert sorted(stops[:2]) == ["capture", "capture"] and stops[2] == "sync" and sorted(stops[3:]) == ["learn", "record"]
    # the recorder was started only after the learner said it was ready, sync only after the recorder
    order = [e.split()[0] + " " + e.split()[1] for e in ev if e]
    assert order.index("ready learn") < order.index("start record") < order.index("ready record") \
        < order.index("start sync")
    assert all(s.state == "stopped" for s in sup.stages.values())
