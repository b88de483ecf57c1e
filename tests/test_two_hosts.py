"""Two hosts, for real (issue #19): the rig and the GPU box in two Linux network namespaces joined by a veth
pair, CURVE on. The rig's pair publisher binds its veth address; the learner's ingest in the other namespace
connects with the right keys and receives; a client with the wrong server key and one with an unauthorised
client key receive nothing and count the refused handshake. Then the link is unplugged (`ip link set down`)
for 5 s while the rig keeps publishing: the learner recovers, and the gap is counted as lost_in_transport,
equal to the sequence numbers missing and to the publisher's own count of what it dropped — never silent.

Needs root and iproute2 (`scripts/bootstrap.sh` installs iproute2 when it runs as root); skips otherwise.
"""
from __future__ import annotations

import json
import os
import queue
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from radvis.transport import make_keys

REPO = Path(__file__).resolve().parent.parent
OUTAGE_S = 5.0


def _ip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)


@pytest.fixture
def two_hosts():
    """(namespace A, namespace B, veth end in A, A's address, B's address); removed afterwards."""
    if shutil.which("ip") is None:
        pytest.skip("iproute2 (`ip`) is not installed: apt-get install iproute2 (scripts/bootstrap.sh does as root)")
    if os.geteuid() != 0:
        pytest.skip("creating network namespaces needs root (CI runs the tests as root)")
    r = random.randrange(16**6)
    ns_a, ns_b, v_a, v_b = f"rv{r:06x}a", f"rv{r:06x}b", f"vA{r:06x}", f"vB{r:06x}"
    net = f"10.{random.randrange(1, 255)}.{random.randrange(0, 255)}"
    made: list[str] = []
    try:
        for ns in (ns_a, ns_b):
            p = _ip("netns", "add", ns)
            if p.returncode:
                pytest.skip(f"`ip netns add` failed (no network namespaces here?): {p.stderr.strip()}")
            made.append(ns)
        steps = [("link", "add", v_a, "type", "veth", "peer", "name", v_b),
                 ("link", "set", v_a, "netns", ns_a), ("link", "set", v_b, "netns", ns_b),
                 ("-n", ns_a, "addr", "add", f"{net}.1/24", "dev", v_a),
                 ("-n", ns_b, "addr", "add", f"{net}.2/24", "dev", v_b),
                 ("-n", ns_a, "link", "set", "lo", "up"), ("-n", ns_b, "link", "set", "lo", "up"),
                 ("-n", ns_a, "link", "set", v_a, "up"), ("-n", ns_b, "link", "set", v_b, "up")]
        for s in steps:
            p = _ip(*s)
            if p.returncode:
                pytest.skip(f"`ip {' '.join(s)}` failed: {p.stderr.strip()}")
        yield ns_a, ns_b, v_a, f"{net}.1", f"{net}.2"
    finally:
        for ns in made:  # deleting a namespace deletes its end of the veth pair, and with it the other end
            _ip("netns", "del", ns)
        _ip("link", "del", v_a)  # only there when the move into the namespace failed


class Stage:
    """A tests/two_hosts_stage.py process in a namespace; its JSON lines are read on a thread."""

    def __init__(self, ns: str, *args: str):
        env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        self.p = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "tests.two_hosts_stage", *args],
                                  cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue = queue.Queue()
        self.last: dict = {}
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.p.stdout:
            self.lines.put(json.loads(line))

    def wait(self, cond, timeout: float, what: str) -> dict:
        """The first line (or the latest status) for which cond(line) holds, within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            if self.last and cond(self.last):
                return self.last
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{what}: not within {timeout} s; last line {self.last}; "
                                     f"exit {self.p.poll()} {self.stderr() if self.p.poll() is not None else ''}")
            try:
                self.last = self.lines.get(timeout=min(left, 0.5))
            except queue.Empty:
                pass

    def stop(self) -> None:
        try:
            self.p.stdin.write("stop\n")
            self.p.stdin.flush()
        except (BrokenPipeError, OSError):
            pass

    def stderr(self) -> str:
        return self.p.stderr.read()[-3000:] if self.p.stderr else ""

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait(10)


def test_rig_and_gpu_box_over_a_veth_link_with_curve_and_an_unplug(two_hosts, tmp_path):
    ns_a, ns_b, v_a, ip_a, _ = two_hosts
    keys, other = make_keys(tmp_path / "keys"), make_keys(tmp_path / "other")
    stages = []
    try:
        rig = Stage(ns_a, "rig", "--bind", f"tcp://{ip_a}:*", "--keys", str(keys), "--hwm", "20", "--rate", "50")
        stages.append(rig)
        ep = rig.wait(lambda m: "endpoint" in m, 30, "rig publisher bound")["endpoint"]
        assert ep.startswith(f"tcp://{ip_a}:")
        gpu = Stage(ns_b, "gpu", "--connect", ep, "--keys", str(keys), "--other-keys", str(other))
        stages.append(gpu)

        # CURVE: the learner receives; both intruders were refused (their own counters) and got nothing
        gpu.wait(lambda m: m.get("received", 0) >= 50, 60, "learner receives over the link")
        st = gpu.wait(lambda m: all(i["handshake_failures"] >= 1 for i in m.get("intruders", {}).values()), 30,
                      "intruders refused")
        before = st["max_seq"]

        # unplug the rig's end of the link for OUTAGE_S while the rig keeps publishing
        assert _ip("-n", ns_a, "link", "set", v_a, "down").returncode == 0
        up_at = time.monotonic() + OUTAGE_S
        while time.monotonic() < up_at:  # the scenario itself (not a wait for a result)
            time.sleep(0.05)
        assert _ip("-n", ns_a, "link", "set", v_a, "up").returncode == 0
        # the rig numbered ~OUTAGE_S * 50 pairs meanwhile: the learner must get past all of them
        # and then receive a steady stream again: 100 more pairs than it had, far more than the publisher's
        # queue (hwm 20) and the socket buffers held when the link went down
        n_down = st["received"]
        t_up = time.monotonic()
        after = gpu.wait(lambda m: m["max_seq"] >= before + int(OUTAGE_S * 50) and m["received"] >= n_down + 100,
                         90, "learner recovers")
        recovered_s = time.monotonic() - t_up
        assert after["dropped_by_reason"].get("lost_in_transport", 0) > 0, after

        rig.stop()
        pub = rig.wait(lambda m: "sent" in m, 30, "rig stats")
        gpu.wait(lambda m: m["max_seq"] >= pub["numbered"] - 1, 30, "learner got the rig's last pair")
        gpu.stop()
        final = gpu.wait(lambda m: m.get("final"), 30, "learner final")
    finally:
        for s in stages:
            s.kill()

    seqs = final["seqs"]
    assert seqs == sorted(set(seqs)), "pairs out of order or repeated"
    missing = (seqs[-1] - seqs[0] + 1) - len(seqs)
    lost = final["dropped_by_reason"].get("lost_in_transport", 0)
    assert lost > 0 and lost == missing, (lost, missing)
    # nothing dropped for any other reason, and every missing number is one the publisher counted as dropped
    # (its queue to the unplugged subscriber was full): the gap is accounted for on both sides
    assert final["dropped_by_reason"] == {"lost_in_transport": lost}
    assert pub["dropped_hwm"] == lost and pub["sent"] + pub["dropped_hwm"] == pub["numbered"]
    assert final["by_source"]["rig1"]["pairs_in"] == len(seqs)
    assert final["by_source"]["rig1"]["lost_in_transport"] == lost
    for name, i in final["intruders"].items():
        assert i["received"] == 0, name
        assert i["handshake_failures"] >= 1, name
    print(json.dumps({"received": len(seqs), "lost_in_transport": lost, "rig": pub, "recovered_s": round(recovered_s, 1),
                      "intruders": final["intruders"]}))  # shown with pytest -s
