"""The rig supervisor: every enabled stage is a `radvis ...` child process in its own process group; a
crashed stage is restarted with a doubling backoff. Children also get PR_SET_PDEATHSIG, so even a SIGKILLed
supervisor leaves none behind.

The supervisor binds the control endpoint (radvis/control.py): stages send their stats there, announce
that they are ready (an `event` message {"event": "ready", "stage", "pid"}, sent once they are subscribed or
listening), and emulated devices send the scene's ground truth, which the supervisor republishes on
endpoints.truth (two emulator processes cannot both bind one endpoint; this is ZeroMQ's forwarder pattern).

Order matters for "nothing lost" (`START_ORDER`). The emulated devices start first and the capture stages
find them listening, as they would find hardware; then the consumers (learner, recorder, sync), each
subscribed before anything upstream of it publishes; the capture stages last. Each stage is started only
after the previous one said it is ready (bounded: a stage that never does is reported and the rig goes on).
Stop is upstream first (`STOP_WAVES`): the emulated devices, then the capture stages (which publish what
the devices sent), then sync (which pairs and publishes what it still holds), then the recorder and the
learner, each wave after the previous one has exited plus a short grace for messages in flight. A stage
that does not exit within `rig.stop_timeout_s` of its wave's SIGTERM is SIGKILLed.

Stages that have no subcommand in this build are reported as unavailable and not started: nothing is faked.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from radvis.control import is_ready

log = logging.getLogger("radvis.rig")

# stage -> the radvis subcommand that runs it
STAGE_ARGV = {
    "emulate-radar": ["emulate", "radar"],
    "emulate-camera": ["emulate", "camera"],
    "radar": ["capture", "radar"],
    "camera": ["capture", "camera"],
    "sync": ["sync"],
    "record": ["record"],
    "learner": ["learn", "online"],
    "view": ["view"],
}
# the devices first (as hardware is switched on before the software), then downstream first: a consumer is
# subscribed before its producer publishes the first message
START_ORDER = ["emulate-radar", "emulate-camera", "learner", "record", "view", "sync", "camera", "radar"]
EMULATORS = ("emulate-radar", "emulate-camera")
# upstream first: each stage gets everything that was produced upstream of it before it stops
STOP_WAVES = [EMULATORS, ("radar", "camera"), ("sync",), ("record", "learner")]
STOP_GRACE_S = 0.5  # for messages in flight between a wave and the next
# the `stage` field daemons put in their stats and ready messages -> rig stage
STATS_STAGE = {"capture-radar": "radar", "capture-camera": "camera", "record": "record", "sync": "sync",
               "learner": "learner", "learn-online": "learner", "learn": "learner",
               "emulate-radar": "emulate-radar", "emulate-camera": "emulate-camera", "view": "view"}
BACKOFF_CAP_S = 30.0
HEALTHY_S = 30.0  # a stage that ran this long starts again from the first backoff
EXIT_CONFIG = 2  # exit code for a configuration/usage error: restarting cannot help


def has_command(parser: argparse.ArgumentParser, words: list[str]) -> bool:
    """True if `radvis WORDS...` is a registered subcommand of `parser`."""
    for w in words:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs or w not in subs[0].choices:
            return False
        parser = subs[0].choices[w]
    return True


def _pdeathsig() -> None:
    """In the child before exec: die with the supervisor, whatever way it dies."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
    except OSError:
        pass


@dataclass
class Stage:
    name: str
    argv: list[str]
    proc: subprocess.Popen | None = None
    state: str = "pending"  # pending, running, backoff, failed, stopped
    restarts: int = 0
    backoff_s: float = 1.0
    next_start: float = 0.0
    started_at: float = 0.0
    last_rc: int | None = None
    pids: list = field(default_factory=list)  # every pid this stage ever had (for cleanup checks)
    stats: dict = field(default_factory=dict)
    stats_t: float = 0.0
    log_path: Path | None = None
    ready_pid: int | None = None  # the pid whose ready message arrived (a restarted stage announces again)
    first: tuple | None = None  # (pid, time, count) of the first stats with a count: the mean rate's start


# What each stage counts, in the order looked for: (counter, its rate, unit). The rate in a stats message is
# over the last interval only; the table and the report also show the total and the mean over the run.
COUNTERS = [("frames", "frames_per_s", "frames"), ("written", "written_per_s", "msgs"),
            ("pairs", "pairs_per_s", "pairs"), ("step", "steps_per_s", "steps")]


class Supervisor:
    def __init__(self, stages: list[str], *, common_args: list[str], run_dir: str | Path, backoff_s: float = 1.0,
                 stop_timeout_s: float = 5.0, control_endpoint: str | None = None, python: str = sys.executable,
                 extra_args: dict[str, list[str]] | None = None, truth_endpoint: str | None = None, curve=None):
        self.run_dir = Path(run_dir)
        (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
        self.common, self.python = list(common_args), python
        self.first_backoff, self.stop_timeout = backoff_s, stop_timeout_s
        extra = extra_args or {}
        self.stages = {n: Stage(n, STAGE_ARGV[n] + list(extra.get(n, [])), backoff_s=backoff_s,
                                log_path=self.run_dir / "logs" / f"{n}.log") for n in stages}
        self.ctl = self.truth = None
        self.relayed = self.relay_dropped = 0
        if control_endpoint:
            from radvis.transport import Publisher, Subscriber
            try:
                self.ctl = Subscriber(control_endpoint, bind=True, hwm=10000, curve=curve, name="rig.control")
            except Exception as e:  # without it: stats from logs, no readiness (bounded waits), no truth relay
                log.warning("cannot bind the control endpoint %s (%r): stats from logs only, stages start without "
                            "waiting for their ready message", control_endpoint, e)
            if self.ctl is not None and truth_endpoint and any(n in EMULATORS for n in self.stages):
                try:
                    self.truth = Publisher(truth_endpoint, hwm=10000, curve=curve)
                except Exception as e:
                    log.warning("cannot bind the truth endpoint %s (%r): no scene ground truth", truth_endpoint, e)
        self.t0 = time.monotonic()

    # -- processes ------------------------------------------------------------------------------
    def start(self, st: Stage) -> None:
        cmd = [self.python, "-m", "radvis", *self.common, *st.argv]
        with open(st.log_path, "ab") as logf:
            st.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                       start_new_session=True,  # own process group: Ctrl-C reaches only us
                                       preexec_fn=_pdeathsig)
        st.pids.append(st.proc.pid)
        st.state, st.started_at = "running", time.monotonic()
        log.info("%s: started pid %d: %s", st.name, st.proc.pid, " ".join(st.argv))

    def _killpg(self, st: Stage, sig: int) -> None:
        if st.proc is None:
            return
        try:
            os.killpg(st.proc.pid, sig)
        except ProcessLookupError:
            pass

    def check(self) -> None:
        """Notice exits, schedule and perform restarts."""
        now = time.monotonic()
        for st in self.stages.values():
            if st.state == "running" and st.proc.poll() is not None:
                st.last_rc = st.proc.returncode
                self._killpg(st, signal.SIGKILL)  # anything the stage left in its group goes with it
                if now - st.started_at >= HEALTHY_S:
                    st.backoff_s = self.first_backoff
                if st.last_rc == EXIT_CONFIG:
                    st.state = "failed"
                    log.error("%s: exited with a configuration error (rc 2); not restarting; see %s",
                              st.name, st.log_path)
                    continue
                st.state, st.next_start = "backoff", now + st.backoff_s
                log.warning("%s: exited rc=%s; restarting in %.1f s", st.name, st.last_rc, st.backoff_s)
                st.backoff_s = min(max(st.backoff_s * 2, 0.1), BACKOFF_CAP_S)
            elif st.state == "backoff" and now >= st.next_start:
                st.restarts += 1
                self.start(st)
            elif st.state == "pending":
                self.start(st)

    def start_all(self, ready_timeout_s: float = 60.0) -> None:
        """Start the pending stages in START_ORDER, each after the previous one announced it is ready
        (bounded: a stage that never gets ready is reported and the rig goes on without waiting for it)."""
        rank = {n: i for i, n in enumerate(START_ORDER)}
        for st in sorted(self.stages.values(), key=lambda s: rank.get(s.name, len(rank))):
            if st.state != "pending":
                continue
            self.start(st)
            if self.ctl is None:
                continue
            deadline = time.monotonic() + ready_timeout_s
            while st.ready_pid != st.proc.pid:
                if st.proc.poll() is not None or time.monotonic() > deadline:
                    log.warning("%s: not ready (%s); starting the others anyway", st.name,
                                f"exited rc={st.proc.returncode}" if st.proc.poll() is not None
                                else f"no ready message after {ready_timeout_s:g} s; see {st.log_path}")
                    break
                self.pump(0.05)

    def stop(self) -> None:
        """SIGTERM the stages wave by wave, upstream first (STOP_WAVES), then SIGKILL what is left. The control
        plane keeps flowing meanwhile (the learner and the recorder get the truth of the last frames)."""
        waves = [[self.stages[n] for n in w if n in self.stages] for w in STOP_WAVES]
        waves.append([s for s in self.stages.values() if not any(s.name in w for w in STOP_WAVES)])
        for i, wave in enumerate(waves):
            live = [s for s in wave if s.proc is not None and s.proc.poll() is None]
            if not live:
                continue
            for st in live:
                self._killpg(st, signal.SIGTERM)
            # each wave gets the whole timeout: the learner's last checkpoint must not pay for a slow camera
            deadline = time.monotonic() + self.stop_timeout
            while any(s.proc.poll() is None for s in live) and time.monotonic() < deadline:
                self.pump(0.05)
            for st in live:
                if st.proc.poll() is None:
                    log.warning("%s: did not stop within %.1f s; killing", st.name, self.stop_timeout)
                    self._killpg(st, signal.SIGKILL)
            if i + 1 < len(waves):
                grace = time.monotonic() + STOP_GRACE_S
                while time.monotonic() < grace:
                    self.pump(0.05)
        for st in self.stages.values():
            self._killpg(st, signal.SIGKILL)  # the group, in case a stage forked helpers
            if st.proc is not None:
                st.proc.wait()
                st.last_rc = st.proc.returncode
            if st.state != "failed":
                st.state = "stopped"
        if self.ctl is not None:
            self.drain_stats()
            self.ctl.close()
            self.ctl = None
        if self.truth is not None:
            self.truth.close()
            self.truth = None

    # -- status ---------------------------------------------------------------------------------
    def pump(self, timeout_s: float = 0.0) -> int:
        """Handle what arrived on the control endpoint (waiting at most `timeout_s` for the first message):
        stats for the status table, ready messages, truth to relay. Returns the number of messages."""
        if self.ctl is None:
            if timeout_s:
                time.sleep(timeout_s)
            return 0
        n, wait_ms = 0, int(timeout_s * 1000)
        while True:
            frames = self.ctl.recv_frames(wait_ms)
            if frames is None:
                return n
            wait_ms = 0
            m = self.ctl.accept(frames)
            if m is None:
                continue
            n += 1
            if m.kind == "truth":
                if self.truth is not None:
                    if self.truth.send_frames([f.buffer if hasattr(f, "buffer") else f for f in frames]):
                        self.relayed += 1
                    else:
                        self.relay_dropped += 1
                continue
            name = STATS_STAGE.get(str(m.meta.get("stage", m.source)), str(m.meta.get("stage", m.source)))
            st = self.stages.get(name)
            if st is None:
                continue
            if is_ready(m):
                pid = m.meta.get("pid")
                if st.proc is not None and pid == st.proc.pid:
                    st.ready_pid = pid
                    log.info("%s: ready %s", name, {k: v for k, v in m.meta.items() if k not in ("event", "stage")})
            elif m.kind == "stats":
                st.stats, st.stats_t = dict(m.meta), time.monotonic()
                self._note_first(st)

    def drain_stats(self) -> None:
        self.pump(0.0)

    def _stats_from_log(self, st: Stage) -> None:
        """Fallback for stages that log `stats {...}` (radvis.log.StatsLine) but do not publish them."""
        if st.log_path is None or not st.log_path.exists() or time.monotonic() - st.stats_t < 10:
            return
        with open(st.log_path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 16384))
            tail = f.read().decode("utf-8", "replace")
        for line in reversed(tail.splitlines()):
            i = line.find(" stats {")
            if i >= 0:
                try:
                    st.stats = json.loads(line[i + 7:])
                except json.JSONDecodeError:
                    continue
                return

    @staticmethod
    def _count(s: dict) -> tuple[str | None, float | None, str | None]:
        """(counter key, its value, unit) of a stats dict."""
        for key, _, unit in COUNTERS:
            if isinstance(s.get(key), (int, float)) and not isinstance(s.get(key), bool):
                return key, s[key], unit
        return None, None, None

    def _note_first(self, st: Stage) -> None:
        _, n, _ = self._count(st.stats)
        pid = st.proc.pid if st.proc else None
        if n is not None and (st.first is None or st.first[0] != pid):
            st.first = (pid, st.stats_t, n)

    def status(self) -> dict:
        self.drain_stats()
        out = {}
        for st in self.stages.values():
            if not st.stats_t:
                self._stats_from_log(st)
            s = st.stats
            rate = next((s[k] for k in ("frames_per_s", "written_per_s", "pairs_per_s", "steps_per_s") if k in s),
                        next((v for k, v in s.items() if k.endswith("_per_s") and not k.startswith("bytes")), None))
            key, total, unit = self._count(s)
            mean = None
            if total is not None and st.first is not None and st.stats_t > st.first[1]:
                mean = round((total - st.first[2]) / (st.stats_t - st.first[1]), 3)
            learner = None
            if st.name == "learner" and s:
                learner = {k: s.get(k) for k in ("step", "pairs_in", "loss", "linear_acc", "knn_acc", "buffer_fill")}
            out[st.name] = {"state": st.state, "pid": st.proc.pid if st.proc else None, "restarts": st.restarts,
                            "ready": st.proc is not None and st.ready_pid == st.proc.pid,
                            "last_rc": st.last_rc, "pids": st.pids, "rate_per_s": rate,
                            "total": total, "unit": unit, "mean_rate_per_s": mean, "learner": learner,
                            "mb_per_s": round(s["bytes_per_s"] / 1e6, 3) if "bytes_per_s" in s else None,
                            "drops": stage_drops(s) if s else None,
                            "lag_ms": s.get("lag_ms"), "errors": s.get("device_errors")}
        return out

    def table(self, status: dict) -> str:
        """The live status table: columns padded to their widest cell; units in the headers and cells."""
        return f"rig t={time.monotonic() - self.t0:7.1f} s\n" + status_table(status)

    def write_status(self, status: dict) -> None:
        tmp = self.run_dir / "status.json.tmp"
        tmp.write_text(json.dumps({"t_s": round(time.monotonic() - self.t0, 3), "stages": status,
                                   "truth": {"relayed": self.relayed, "dropped": self.relay_dropped}}))
        os.replace(tmp, self.run_dir / "status.json")  # readers never see a half-written file


def stage_drops(s: dict) -> int:
    """Messages a stage dropped or saw missing, from its stats: `dropped` and `lost` (capture, recorder, learner),
    and sync's, which it reports per socket: pairs its publisher dropped at the high-water mark (a learner or
    recorder that cannot keep up, or a network link that is down) and frames its subscribers saw missing."""
    n = (s.get("dropped", 0) or 0) + (s.get("lost", 0) or 0) + (s.get("pub_dropped_hwm", 0) or 0)
    sub = s.get("sub")
    return n + ((sub.get("lost", 0) or 0) if isinstance(sub, dict) else 0)


def _num(v, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def learner_cell(lr: dict | None) -> str:
    """The learner's progress in words: optimizer steps, pairs received, InfoNCE loss, last held-out probe."""
    if not lr:
        return ""
    parts = []
    if lr.get("step") is not None:
        parts.append(f"{lr['step']} steps")
    if lr.get("pairs_in") is not None:
        parts.append(f"{lr['pairs_in']} pairs in")
    if lr.get("loss") is not None:
        parts.append(f"loss {lr['loss']:.3f}")
    if lr.get("linear_acc") is not None:
        parts.append(f"probe {100 * lr['linear_acc']:.1f} %")
    return ", ".join(parts)


def status_table(status: dict) -> str:
    """Rows of stages as text columns padded to their content (numbers right-aligned)."""
    head = ["stage", "state", "pid", "restarts", "total", "rate", "MB/s", "drops", "lag ms", "errors", "detail"]
    rows = []
    for n, s in status.items():
        unit = s.get("unit") or ""
        total = "-" if s.get("total") is None else f"{s['total']:g} {unit}"
        rate = "-" if s.get("rate_per_s") is None else f"{s['rate_per_s']:.1f} {unit or 'it'}/s"
        rows.append([n, s["state"], _num(s["pid"], "d"), str(s["restarts"]), total, rate, _num(s["mb_per_s"], ".2f"),
                     _num(s["drops"], ""),
                     _num(s["lag_ms"], ".1f"), _num(s["errors"], ""), learner_cell(s.get("learner"))])
    widths = [max(len(r[i]) for r in [head] + rows) for i in range(len(head))]
    left = {0, 1, len(head) - 1}

    def line(cells):
        return " ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return "\n".join([line(head)] + [line(r) for r in rows])


def run(sup: Supervisor, *, duration_s: float = 0.0, interval_s: float = 5.0, out=sys.stdout,
        unavailable: list[str] | None = None) -> int:
    """Main loop: start, watch, print the status table; stop on SIGINT/SIGTERM or after duration_s."""
    stopping = {"sig": None}

    def on_signal(signum, frame):
        stopping["sig"] = signum
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    t_end = time.monotonic() + duration_s if duration_s else None
    next_print = next_status = 0.0
    try:
        if unavailable:
            print(f"rig: not started (no such subcommand in this build): {', '.join(unavailable)}", file=out, flush=True)
        sup.start_all()
        while stopping["sig"] is None and not (t_end and time.monotonic() >= t_end):
            sup.check()
            now = time.monotonic()
            if now >= next_print:
                st = sup.status()
                sup.write_status(st)
                print(sup.table(st), file=out, flush=True)
                next_print = now + interval_s
            elif now >= next_status:  # keep status.json fresh between table prints
                sup.write_status(sup.status())
                next_status = now + 0.25
            sup.pump(0.05)  # also the pause between checks: truth is relayed as it arrives
    finally:
        sup.stop()
        st = sup.status()
        sup.write_status(st)
        print(sup.table(st), file=out, flush=True)
        for s, h in old.items():
            signal.signal(s, h)
    why = signal.Signals(stopping["sig"]).name if stopping["sig"] else f"duration {duration_s:g} s"
    print(f"rig: stopped ({why}); all stages exited", file=out, flush=True)
    return 0
