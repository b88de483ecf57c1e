"""`radvis rig`'s replay check (rig/cli.py `verify_replay`) with CURVE on. The check starts `radvis sync` and
`radvis replay` with the rig's own config, so their sockets speak CURVE; the check's own sockets (the control
endpoint it binds for sync's ready message, the subscriber it reads the replayed pairs with) must too.
Without that it reproduced 0 of the live pairs and the rig exited 1."""
from __future__ import annotations

from capture.record import Segment, frame
from radvis.config import load
from radvis.transport import make_keys
from radvis.wire import encode
from rig.cli import recorded_pairs, verify_replay
from tests.test_sync_daemon import run_processor, session_from_rig
from tests.test_sync_matcher import make_rig


def test_replay_check_reproduces_the_live_pairs_with_curve_on(tmp_path):
    keys = make_keys(tmp_path / "keys")
    sets = ["transport.curve=true", f"transport.curve_dir='{keys}'", "sync.radar_latency_ms=3.0",
            "camera.latency_ms=6.0", "sync.clock_warmup_s=0", "rig.replay_rate=8.0",
            # the check puts radar, camera, pairs and control on its own ipc paths; these too, off the machine's ports
            f"endpoints.truth='ipc://{tmp_path}/truth.sock'", f"endpoints.view_stats='ipc://{tmp_path}/view.sock'"]
    cfg = load(None, sets)
    # a recorded session: the frames of a synthetic rig and the pairs sync made of them, as `record` writes them
    msgs = session_from_rig(make_rig(23, duration_s=12, drift_r=30, drift_c=-30, jitter_ms=1.0))
    for m in msgs:
        m.replay = False  # recorded live
    pairs, _ = run_processor(msgs, cfg)
    session = tmp_path / "session"
    session.mkdir()
    seg = Segment(session / "radvis-0.mcap")
    for i, m in enumerate(msgs):
        seg.add(m.kind, frame(encode(m)), log_time=m.t_mono_ns, publish_time=m.t_mono_ns, sequence=i)
    for i, p in enumerate(x for x in pairs if x.kind == "pair"):
        p.t_mono_ns = p.t_wall_ns = p.meta["t_pair_ns"]
        seg.add("pairs", frame(encode(p)), log_time=p.t_mono_ns, publish_time=p.t_mono_ns, sequence=i)
    seg.close()
    live, _ = recorded_pairs(session)
    assert len(live) > 50

    common = [a for s in sets for a in ("--set", s)]
    res = verify_replay(cfg, session, common, timeout_s=120)
    assert res["same_pairs"] and res["identical"] == res["live_pairs"] == len(live), res
