"""Two hosts, for real (issue #19): the rig and the GPU box in two Linux network namespaces joined by a veth
pair, CURVE on. The rig's pair publisher binds its veth address; the learner in the other namespace
connects with the right keys and receives; a client with the wrong server key and one with an unauthorised
client key receive nothing and count the refused handshake. Then the link is unplugged (`ip link set down`)
for 5 s while the rig keeps publishing: the learner recovers, and the gap is counted as lost_in_transport,
equal to the sequence numbers missing and to the publisher's own count of what it dropped — never silent.

Two tests: one with a stand-in pair publisher and the learner's ingest in a process of its own
(tests/two_hosts_stage.py: every sequence number is seen, so the gap is checked number by number), and one
with the real processes: `radvis rig` running the emulated devices, the capture daemons and sync in
namespace A, `radvis learn online` in namespace B.

Needs root and iproute2 (`scripts/bootstrap.sh` installs iproute2 when it runs as root); skips otherwise.
"""
from __future__ import annotations

import json
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from radvis.transport import make_keys

from .conftest import rig_sets, stop_radvis

REPO = Path(__file__).resolve().parent.parent
OUTAGE_S = 5.0
ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


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


def unplug(ns: str, dev: str, seconds: float) -> None:
    """Take `dev` in `ns` down for `seconds`, then up again (the scenario itself, not a wait for a result)."""
    assert _ip("-n", ns, "link", "set", dev, "down").returncode == 0
    up_at = time.monotonic() + seconds
    while time.monotonic() < up_at:
        time.sleep(0.05)
    assert _ip("-n", ns, "link", "set", dev, "up").returncode == 0


class Watch:
    """Something the test observes with deadlines: `last` is the latest observation, `refresh(t)` looks for a
    newer one (waiting at most t s), `describe()` says what to show when a wait fails."""
    last: dict | list = {}

    def refresh(self, t: float) -> None:
        raise NotImplementedError

    def describe(self) -> str:
        return ""

    def wait(self, cond, timeout: float, what: str):
        """The first observation (or the latest) for which cond(observation) holds, within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            if self.last and cond(self.last):
                return self.last
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{what}: not within {timeout} s; last {self.last}; {self.describe()}")
            self.refresh(min(left, 0.5))


class Stage(Watch):
    """A tests/two_hosts_stage.py process in a namespace; its JSON lines are read on a thread."""

    def __init__(self, ns: str, *args: str):
        self.p = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "tests.two_hosts_stage", *args],
                                  cwd=REPO, env=ENV, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue = queue.Queue()
        self.last: dict = {}
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.p.stdout:
            self.lines.put(json.loads(line))

    def refresh(self, t: float) -> None:
        try:
            self.last = self.lines.get(timeout=t)
        except queue.Empty:
            pass

    def describe(self) -> str:
        return f"exit {self.p.poll()} {self.stderr() if self.p.poll() is not None else ''}"

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


class Radvis:
    """A `radvis` process in a namespace, its output in tmp/NAME.log (a file: a chatty daemon never blocks)."""

    def __init__(self, ns: str, tmp: Path, name: str, args: list[str]):
        self.name, self.log = name, tmp / f"{name}.log"
        with open(self.log, "wb") as f:
            self.p = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-m", "radvis", *args], cwd=REPO,
                                      env=ENV, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self, timeout: float = 120) -> int:
        return stop_radvis(self.p, timeout)

    def kill(self) -> None:
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGKILL)
        self.p.wait(10)


class Polled(Watch):
    """What a running process writes to files: `read()` gives the latest observation (or None). A process
    that exits meanwhile fails the wait at once, with its log."""

    def __init__(self, proc: Radvis, read):
        self.proc, self.read, self.last = proc, read, {}

    def refresh(self, t: float) -> None:
        obs = self.read()
        if obs is not None and obs != self.last:
            self.last = obs
            return
        if self.proc.p.poll() is not None:
            raise AssertionError(f"{self.proc.name} exited (rc {self.proc.p.returncode}):\n{self.proc.tail()}")
        time.sleep(min(t, 0.2))  # the poll interval of a file another process appends to

    def describe(self) -> str:
        return f"{self.proc.name} log:\n{self.proc.tail()}"


class JsonLines:
    """The complete lines appended to a file since the last call, as JSON (a line being written waits)."""

    def __init__(self, path: Path, marker: str = ""):
        self.path, self.marker, self.pos, self.rows = path, marker, 0, []

    def read(self) -> list:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                data = f.read()
        except FileNotFoundError:
            return self.rows
        end = data.rfind(b"\n") + 1
        self.pos += end
        new = []
        for line in data[:end].decode("utf-8", "replace").splitlines():
            if self.marker:  # `... stats {json}` lines of a log
                i = line.find(self.marker)
                if i < 0:
                    continue
                line = line[i + len(self.marker):]
            new.append(json.loads(line))
        if new:
            self.rows = self.rows + new  # a new list: Polled sees a change
        return self.rows


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
        unplug(ns_a, v_a, OUTAGE_S)
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


# ---------------------------------------------------------------------------------------------
# the real processes: `radvis rig` in namespace A, `radvis learn online` in namespace B
# ---------------------------------------------------------------------------------------------

RIG_STAGES = ["emulate-radar", "emulate-camera", "radar", "camera", "sync"]  # a rig without learner and recorder
PAIR_PORT = 5552  # docs/deploy.md's port, in namespace A: its network stack is this test's alone
SOURCE = "rig1"  # sync.source: the learner counts pairs and losses per rig by it
# pairs queued for the unplugged learner before sync drops (and counts) them: 1 s of pairs, so the 5 s outage
# costs pairs (with the default 1000 it would cost none). It is the whole rig's sndhwm: the capture stages'
# frames to sync have this much room too (a frame dropped there is counted by sync as lost upstream)
SNDHWM = 10


def _sets(values: list[str]) -> list[str]:
    return [a for v in values for a in ("--set", v)]


def _gpu_box_keys(keys: Path, to: Path) -> Path:
    """What docs/deploy.md puts on the GPU box: the server's public key and the client's key pair, no server
    secret and no authorized_clients/."""
    to.mkdir()
    for name in ("server.key", "client.key_secret"):
        shutil.copy2(keys / name, to / name)
    return to


def test_real_rig_and_learner_over_a_veth_link_with_curve_and_an_unplug(two_hosts, tmp_path):
    """`radvis rig` (emulated radar and camera, the two capture daemons, sync) in namespace A, sync's pair
    endpoint bound on A's veth address; `radvis learn online` in namespace B; CURVE on every socket. The learner
    trains on pairs of the real sync; two intruders in B get nothing; the link is down for 5 s while the rig
    runs: no stage of the rig restarts, the learner receives again, and every pair sync could not deliver is
    the learner's lost_in_transport, equal to sync's own count of pairs dropped at its send queue."""
    from learner.checkpoint import load_checkpoint

    from .test_online_trainer import TINY

    ns_a, ns_b, v_a, ip_a, _ = two_hosts
    keys, other = make_keys(tmp_path / "keys"), make_keys(tmp_path / "other")
    gpu_keys = _gpu_box_keys(keys, tmp_path / "gpu-keys")
    ep = f"tcp://{ip_a}:{PAIR_PORT}"
    run_dir, out = tmp_path / "rig", tmp_path / "learner"
    # A: every other endpoint on ipc:// in tmp_path, the emulated devices on A's loopback (conftest.rig_sets)
    rig_args = ["rig", "--no-eval", "--duration", "0", *rig_sets(tmp_path), *_sets([
        f"endpoints.pairs='{ep}'", "transport.curve=true", f"transport.curve_dir='{keys}'",
        f"transport.sndhwm={SNDHWM}", f"rig.stages={json.dumps(RIG_STAGES)}", f"rig.run_dir='{run_dir}'",
        "rig.heldout_sequences=0", "rig.stats_interval_s=1", "rig.stop_timeout_s=60", f"sync.source='{SOURCE}'"])]
    # B: the tiny CPU learner of tests/test_online_trainer.py; no probe (no labels come from another host)
    learner_args = ["learn", "online", "--out", str(out), "--first-pair-timeout", "0", "--device", "cpu", *_sets(TINY + [
        f"endpoints.pairs='{ep}'", "transport.curve=true", f"transport.curve_dir='{gpu_keys}'",
        "learner.threads=1", "learner.online_live_eval_fraction=0", "learner.online_eval_every_steps=0",
        "learner.online_max_updates_per_pair=2", "learner.online_ckpt_every_steps=0", "learner.online_ckpt_every_s=0"])]
    procs: list = []
    try:
        learner = Radvis(ns_b, tmp_path, "learner", learner_args)
        procs.append(learner)
        # subscribed before the rig starts (as the rig starts its learner before sync): sync's first pairs
        # are not published before anyone listens
        Polled(learner, lambda: "ready: subscribed" in learner.log.read_text(errors="replace") or None).wait(
            bool, 120, "learner subscribed to the pair stream")
        intruders = Stage(ns_b, "intruders", "--connect", ep, "--keys", str(gpu_keys), "--other-keys", str(other))
        procs.append(intruders)
        rig = Radvis(ns_a, tmp_path, "rig", rig_args)
        procs.append(rig)
        rows = JsonLines(out / "metrics.jsonl")
        metrics = Polled(learner, lambda: next((r for r in reversed(rows.read()) if "dropped_by_reason" in r), None))

        def read_status():
            try:
                return json.loads((run_dir / "status.json").read_text())["stages"]
            except (OSError, ValueError, KeyError):
                return None
        status = Polled(rig, read_status)

        # the learner trains on pairs from the real sync, over the link
        metrics.wait(lambda r: r["pairs_in"] >= 50, 300, "learner receives pairs from the rig's sync")
        running = status.wait(lambda s: sorted(s) == sorted(RIG_STAGES) and all(
            v["state"] == "running" and v["ready"] for v in s.values()), 60, "every rig stage running")
        pids = {n: v["pid"] for n, v in running.items()}
        # CURVE: both intruders were refused (their own counters) and got nothing
        intruders.wait(lambda m: all(i["handshake_failures"] >= 1 for i in m["intruders"].values()), 60,
                       "intruders refused")

        at_unplug = metrics.last
        unplug(ns_a, v_a, OUTAGE_S)
        t_up = time.monotonic()
        metrics.wait(lambda r: r["pairs_in"] > at_unplug["pairs_in"], 240, "learner receives again")
        resumed_s = time.monotonic() - t_up  # reported, not asserted (a row is written every few steps)
        # the rig pairs ~10 a second: 100 more pairs than at the unplug is far more than sync's queue and the
        # socket buffers held while the link was down, so the learner receives a steady stream again
        after = metrics.wait(lambda r: r["pairs_in"] >= at_unplug["pairs_in"] + 100, 240, "learner recovers")
        st = read_status()  # no stage of the rig crashed or restarted meanwhile
        assert {n: (v["pid"], v["restarts"], v["state"]) for n, v in st.items()} == \
            {n: (pid, 0, "running") for n, pid in pids.items()}, st

        intruders.stop()
        refused = intruders.wait(lambda m: m.get("final"), 30, "intruders' final counts")["intruders"]
        assert rig.stop() == 0, rig.tail()  # SIGTERM: the rig stops its stages upstream first
        # sync has exited: what it sent is on the wire; the learner has it all once its counters stand still
        # for two of its status lines (1 s apart)
        stats = JsonLines(learner.log, " stats ")
        n0 = len(stats.read())
        Polled(learner, stats.read).wait(
            lambda ls: len(ls) >= n0 + 2 and all((x["pairs_in"], x["dropped"]) == (ls[-1]["pairs_in"], ls[-1]["dropped"])
                                                  for x in ls[-2:]), 60, "learner drained the link")
        assert learner.stop() == 0, learner.tail()
        intruders.p.wait(30)
        # nothing left running on either host
        assert [_ip("netns", "pids", ns).stdout.split() for ns in (ns_a, ns_b)] == [[], []]
    finally:
        for p in procs:
            p.kill()

    final_status = json.loads((run_dir / "status.json").read_text())["stages"]
    assert {n: (v["pids"], v["restarts"], v["state"], v["last_rc"]) for n, v in final_status.items()} == \
        {n: ([pid], 0, "stopped", 0) for n, pid in pids.items()}, final_status
    sync = JsonLines(run_dir / "logs" / "sync.log", " stats ").read()[-1]  # its final stats, logged on exit
    # the rig's own table (status.json, rig-report.md) shows what sync dropped, too
    assert final_status["sync"]["drops"] == sync["pub_dropped_hwm"] + sync["sub"]["lost"], final_status["sync"]
    final = rows.read()[-1]
    assert final["event"] == "stop", final
    lost = final["dropped_by_reason"].get("lost_in_transport", 0)
    # never silent: every pair sync dropped for the unplugged learner is a gap the learner counted, nothing
    # was dropped for any other reason, and the learner's per-rig counters say the same
    assert sync["pub_dropped_hwm"] > 0 and lost == sync["pub_dropped_hwm"], (lost, sync)
    assert final["dropped_by_reason"] == {"lost_in_transport": lost}
    assert final["by_source"][SOURCE]["lost_in_transport"] == lost
    assert final["by_source"][SOURCE]["pairs_in"] == final["pairs_in"]
    # every pair sync published reached the learner or is counted: the learner subscribed before the rig
    # started (sync numbers pairs from 0), and it has sync's last pair (its stream position, in its checkpoint)
    position = load_checkpoint(out / "ckpt.pt")["ingest"]["position"]
    assert len(position) == 1 and position[0][1] == sync["pairs"] - 1, (position, sync["pairs"])
    assert final["pairs_in"] + lost == sync["pairs"], (final["pairs_in"], lost, sync["pairs"])
    assert lost > at_unplug["dropped_by_reason"].get("lost_in_transport", 0)  # lost while the link was down
    assert after["pairs_in"] >= at_unplug["pairs_in"] + 100
    for name, i in refused.items():
        assert i["received"] == 0, name
        assert i["handshake_failures"] >= 1, name
    print(json.dumps({"sync_pairs": sync["pairs"], "pairs_in": final["pairs_in"], "lost_in_transport": lost,
                      "sync_dropped_hwm": sync["pub_dropped_hwm"],
                      "pairs_in_at_unplug": at_unplug["pairs_in"], "resumed_after_link_up_s": round(resumed_s, 1),
                      "steps": final["step"],
                      "intruders": refused}))  # shown with pytest -s
