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
    # the supervisor waited for every stage before it exited: none may be left (none can come back)
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


FAKE_STAGE = """#!{python}
# stands in for `python -m radvis <stage args>`: logs its start, announces itself ready on the control endpoint
# after a while (as a real stage does once it is subscribed or listening), logs its stop on SIGTERM; a fake
# emulator also sends scene truth to the control endpoint
import os, signal, sys, time
sys.path.insert(0, {repo!r})
from radvis.control import send_ready
from radvis.transport import Publisher
from radvis.truth import truth_message
args = [a for a in sys.argv[3:]]
name = " ".join(args)
stage = {{"capture radar": "capture-radar", "capture camera": "capture-camera", "learn online": "learner",
          "emulate radar": "emulate-radar", "emulate camera": "emulate-camera"}}.get(name, name)
def log(what):
    with open({events!r}, "a") as f:
        f.write(f"{{what}} {{stage}}\\n")
def term(*_):
    log("stop")
    os._exit(0)
signal.signal(signal.SIGTERM, term)
log("start")
time.sleep({{"learner": 0.6, "record": 0.3, "emulate-radar": 0.3}}.get(stage, 0.0))  # slow to get ready
pub = Publisher({control!r}, bind=False)
send_ready(pub, stage, 10.0)
log("ready")
k = 0
while True:
    if stage == "emulate-radar":
        k += 1
        pub.send(truth_message("radar", "radar0", k, time.monotonic_ns(), {{"label": "car", "scene_id": 3}}))
    time.sleep(0.05)
"""


def _fake_stages(tmp_path: Path) -> tuple[Path, Path, str]:
    import sys
    events, control = tmp_path / "events", f"ipc://{tmp_path}/control.sock"
    fake = tmp_path / "fake-python"
    fake.write_text(FAKE_STAGE.format(python=sys.executable, repo=str(Path(__file__).resolve().parent.parent),
                                      events=str(events), control=control))
    fake.chmod(0o755)
    return fake, events, control


def test_start_order_waits_for_ready_messages_and_stop_is_upstream_first(tmp_path):
    """Nothing lost at either end of a run: the emulated devices listen before anything opens them, the
    learner and the recorder are subscribed before sync and the capture stages exist, and on stop the devices
    go first, then the producers, so each consumer gets everything."""
    from radvis.transport import Subscriber
    from rig.supervisor import Supervisor
    fake, events, control = _fake_stages(tmp_path)
    stages = ["emulate-radar", "emulate-camera", "radar", "camera", "sync", "record", "learner"]
    sup = Supervisor(stages, common_args=[], run_dir=tmp_path / "run", python=str(fake), stop_timeout_s=10,
                     control_endpoint=control, truth_endpoint=f"ipc://{tmp_path}/truth.sock")
    truth = Subscriber(f"ipc://{tmp_path}/truth.sock", topics=["truth"])
    try:
        sup.start_all(ready_timeout_s=30)
        assert all(s.ready_pid == s.proc.pid for s in sup.stages.values())
        got = []
        deadline = time.monotonic() + 30
        while len(got) < 3 and time.monotonic() < deadline:   # the fake board's truth, relayed by the rig
            sup.pump(0.05)
            m = truth.recv(0)
            if m is not None:
                got.append(m)
        sup.stop()
    finally:
        truth.close()
    assert len(got) >= 3 and all(m.kind == "truth" and m.source == "radar0" and m.meta["label"] == "car" for m in got)
    assert [m.meta["frame_number"] for m in got] == sorted(m.meta["frame_number"] for m in got)
    ev = [e.split() for e in events.read_text().splitlines()]
    starts = [n for w, n in ev if w == "start"]
    stops = [n for w, n in ev if w == "stop"]
    assert starts == ["emulate-radar", "emulate-camera", "learner", "record", "sync", "capture-camera", "capture-radar"]
    # each stage was started only after the one before it said it was ready
    order = [f"{w} {n}" for w, n in ev]
    for a, b in zip(starts, starts[1:]):
        assert order.index(f"ready {a}") < order.index(f"start {b}"), (a, b)
    assert sorted(stops[:2]) == ["emulate-camera", "emulate-radar"]
    assert sorted(stops[2:4]) == ["capture-camera", "capture-radar"] and stops[4] == "sync"
    assert sorted(stops[5:]) == ["learner", "record"]
    assert all(s.state == "stopped" for s in sup.stages.values())


def test_a_stage_that_never_gets_ready_does_not_hold_the_rig(tmp_path):
    from rig.supervisor import Supervisor
    fake = tmp_path / "silent"
    fake.write_text("#!/bin/bash\ntrap 'exit 0' TERM\nwhile true; do sleep 0.05; done\n")   # never says ready
    fake.chmod(0o755)
    sup = Supervisor(["record", "radar"], common_args=[], run_dir=tmp_path / "run", python=str(fake),
                     control_endpoint=f"ipc://{tmp_path}/control.sock")
    sup.start_all(ready_timeout_s=0.5)
    try:
        assert all(s.state == "running" and s.ready_pid is None for s in sup.stages.values())
        assert sup.status()["record"]["ready"] is False
    finally:
        sup.stop()
