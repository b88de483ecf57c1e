"""Two hosts, tested (#19, docs/deploy.md): the rig and the GPU box in two Linux network namespaces joined by
a veth pair, CURVE on. The rig side publishes pairs (`radvis replay` of a recorded pair session, bound to its
veth address, as `radvis sync` would be); the GPU box runs `radvis learn online` against it.

- a client holding the wrong server key receives nothing (and counts the refused handshake);
- the link is unplugged (`ip link set down`) for 5 s mid-stream: both sides carry on, every pair the rig
  sent after the outage arrives, and every pair the outage cost is counted: by the rig (high-water mark,
  `dropped`) and by the learner as `lost_in_transport` (sequence gaps), the same number.

Needs root and iproute2 (`make test` installs iproute2; CI runs as root); skipped with the reason otherwise.
The TCP port is fixed: each test run gets its own fresh network namespaces, so nothing else can hold it."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.pair_session import write_pair_session

REPO = Path(__file__).resolve().parent.parent
N, FPS, RATE = 600, 10.0, 4.0  # 60 s of recording replayed at 4x: 40 pairs/s for 15 s
RIG_IP, GPU_IP, PORT = "10.77.0.1", "10.77.0.2", 5552


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)


@pytest.fixture
def two_hosts():
    if shutil.which("ip") is None:
        pytest.skip("iproute2 (`ip`) is not installed: `make test` installs it (scripts/bootstrap.sh)")
    if os.geteuid() != 0:
        pytest.skip("creating network namespaces needs root (CI runs as root)")
    tag = secrets.token_hex(3)
    rig, gpu, va, vb = f"radvis-{tag}-rig", f"radvis-{tag}-gpu", f"rv{tag}a", f"rv{tag}b"
    try:
        r = _ip("netns", "add", rig)
        if r.returncode != 0:
            pytest.skip(f"`ip netns add` failed here (no CAP_SYS_ADMIN in this container?): {r.stderr.strip()}")
        steps = [("netns", "add", gpu), ("link", "add", va, "type", "veth", "peer", "name", vb),
                 ("link", "set", va, "netns", rig), ("link", "set", vb, "netns", gpu),
                 ("-n", rig, "addr", "add", f"{RIG_IP}/24", "dev", va), ("-n", gpu, "addr", "add", f"{GPU_IP}/24", "dev", vb),
                 ("-n", rig, "link", "set", va, "up"), ("-n", gpu, "link", "set", vb, "up"),
                 ("-n", rig, "link", "set", "lo", "up"), ("-n", gpu, "link", "set", "lo", "up")]
        for s in steps:
            r = _ip(*s)
            assert r.returncode == 0, f"ip {' '.join(s)}: {r.stderr}"
        yield {"rig": rig, "gpu": gpu, "rig_if": va}
    finally:
        for ns in (rig, gpu):
            _ip("netns", "del", ns)   # takes its end of the veth pair with it


def _in(ns: str, args: list[str], **kw) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


WRONG_KEY_CLIENT = r"""
import json, sys, time
from pathlib import Path
from radvis.transport import CurveKeys, Subscriber
sub = Subscriber(sys.argv[1], ["pair"], curve=CurveKeys.load(sys.argv[2]), name="wrong-key")
stop = Path(sys.argv[3])
while not stop.exists():
    sub.recv(timeout_ms=100)
print(json.dumps(sub.stats.as_dict()))
"""


def _metrics(run: Path) -> list[dict]:
    p = run / "metrics.jsonl"
    return [json.loads(x) for x in p.read_text().splitlines() if x.strip()] if p.exists() else []


def test_rig_and_gpu_box_in_two_namespaces_with_curve(two_hosts, tmp_path):
    from radvis.transport import make_keys
    keys, other = make_keys(tmp_path / "keys"), make_keys(tmp_path / "other")
    wrong = tmp_path / "wrong"          # the authorised client's key pair, but another server's public key
    wrong.mkdir()
    shutil.copy(keys / "client.key_secret", wrong / "client.key_secret")
    shutil.copy(other / "server.key", wrong / "server.key")
    write_pair_session(tmp_path / "rig.mcap", N, seed=5, source="rig-a", fps=FPS)
    ep = f"tcp://{RIG_IP}:{PORT}"
    common = ["--set", "transport.curve=true", "--set", f'transport.curve_dir="{keys}"',
              "--set", f'endpoints.truth="ipc://{tmp_path}/truth.sock"',
              "--set", f'endpoints.control="ipc://{tmp_path}/control.sock"', "--set", 'endpoints.view_stats=""']
    run = tmp_path / "run"
    learner = _in(two_hosts["gpu"], [
        "-m", "radvis", "learn", "online", "--out", str(run), "--exit-when-idle", "15", *common,
        "--set", f'endpoints.pairs="{ep}"', "--set", 'learner.radar_encoder="tiny"',
        "--set", 'learner.vision_encoder="tiny"', "--set", 'learner.device="cpu"', "--set", "learner.batch_size=8",
        "--set", "learner.online_min_fill=8", "--set", "learner.online_center_pairs=8", "--set", "learner.log_every=1",
        "--set", "learner.online_live_eval_fraction=0", "--set", "learner.online_eval_every_steps=0",
        "--set", "learner.online_ckpt_every_steps=0", "--set", "learner.online_ckpt_every_s=0",
        "--set", "learner.threads=1"])
    stop = tmp_path / "stop-wrong-client"
    intruder = _in(two_hosts["gpu"], ["-c", WRONG_KEY_CLIENT, ep, str(wrong), str(stop)])
    # the rig: the publisher binds its own address on the rig's link; a small high-water mark, so an outage
    # costs pairs instead of being buffered away
    replay = _in(two_hosts["rig"], ["-m", "radvis", "replay", str(tmp_path / "rig.mcap"), "--rate", str(RATE),
                                    *common, "--set", f'endpoints.pairs="{ep}"', "--set", "transport.sndhwm=8",
                                    "--set", "transport.slow_joiner_s=60"])
    procs = [learner, intruder, replay]
    try:
        deadline = time.monotonic() + 90
        while not any(r.get("pairs_in", 0) >= 20 for r in _metrics(run)[-3:]):   # the stream is flowing
            assert time.monotonic() < deadline and replay.poll() is None and learner.poll() is None, \
                (learner.stderr.read() if learner.poll() is not None else "") + (replay.stderr.read() if replay.poll() is not None else "")
            time.sleep(0.1)
        before = max(r.get("pairs_in", 0) for r in _metrics(run))
        assert _ip("-n", two_hosts["rig"], "link", "set", two_hosts["rig_if"], "down").returncode == 0
        time.sleep(5.0)  # the outage itself (the stimulus, not a wait for something)
        assert _ip("-n", two_hosts["rig"], "link", "set", two_hosts["rig_if"], "up").returncode == 0
        rout, rerr = replay.communicate(timeout=120)
        assert replay.returncode == 0, rerr[-2000:]
        sent = json.loads(rout.strip().splitlines()[-1])
        lout, lerr = learner.communicate(timeout=120)     # exits when idle after the stream
        assert learner.returncode == 0, lerr[-3000:]
        stop.touch()
        iout, ierr = intruder.communicate(timeout=30)
        assert intruder.returncode == 0, ierr[-2000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait()
    # the rig lost pairs to the outage, and counted them
    assert sent["sent"] + sent["dropped"] == N and sent["dropped"] > 0, sent
    final = _metrics(run)[-1]
    assert final["event"] == "stop"
    # everything sent arrived (the link came back, TCP and ZeroMQ recovered); every lost pair is a counted gap
    assert final["pairs_in"] == sent["sent"]
    assert final["dropped_by_reason"] == {"lost_in_transport": sent["dropped"]}, final["dropped_by_reason"]
    assert final["per_source"]["rig-a"]["lost_in_transport"] == sent["dropped"]
    assert final["step"] > 0
    # and it recovered: far more pairs got through than the outage could have buffered (HWM 8 + socket buffers)
    assert final["pairs_in"] > before + 100, (before, final["pairs_in"])
    # the client with the wrong server key got nothing, and said why
    st = json.loads(iout.strip().splitlines()[-1])
    assert st["received"] == 0 and st["handshake_failures"] >= 1, st
