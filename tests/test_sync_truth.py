"""sync/truth.py: the pairing error against the truth, joined by (source, frame_number) either way round."""
from __future__ import annotations

from radvis.wire import Message
from sync.truth import PairingError

MS = 1_000_000


def truth(stream, fn, t, source=None):
    return Message(kind="truth", source=source or f"{stream}0",
                   meta={"stream": stream, "frame_number": fn, "t_capture_ns": t, "label": "car"})


def test_truth_before_or_after_the_pair_bad_truth_and_stale_truth():
    pe = PairingError()
    assert pe.stats() == {"truth": "none"}
    # truth first, then the pair: radar captured 3 ms after the camera; the sync estimated +2.5 ms skew... the
    # wrong sign on purpose: estimate t_camera - t_radar = -2.5 ms, true -3 ms -> skew error 0.5 ms
    pe.add_truth(truth("radar", 7, 1000 * MS))
    pe.add_truth(truth("camera", 21, 997 * MS))
    pe.add_pair(("radar0", 7), ("camera0", 21), -2_500_000, (1100 * MS, 1001 * MS))
    # the pair first, then its truths
    pe.add_pair(("radar0", 8), ("camera0", 24), 4 * MS, (1200 * MS, 1105 * MS))
    assert pe.stats()["pending"] == 1
    pe.add_truth(truth("camera", 24, 1104 * MS))
    pe.add_truth(truth("radar", 8, 1100 * MS))  # true offset -4 ms, estimate +4 ms: error 0 ms
    st = pe.stats()
    assert st["pairs_joined"] == 2 and st["pending"] == 0
    assert st["true_offset_ms"] == {"p50": 3.5, "p99": 3.99, "max": 4.0}
    assert st["skew_error_ms"]["max"] == 0.5
    # malformed truth is counted, never joined
    pe.add_truth(Message(kind="truth", source="radar0", meta={"stream": "radar", "frame_number": "9"}))
    pe.add_truth(Message(kind="truth", source="radar0", meta={"stream": "lidar", "frame_number": 9, "t_capture_ns": 1}))
    assert pe.stats()["truth_bad"] == 2
    # a device restarted and numbers from 1 again: the old entry for frame 7 is not this frame's truth
    pe.add_pair(("radar0", 7), ("camera0", 21), 0, (900_000 * MS, 900_000 * MS))
    assert pe.stats()["pairs_joined"] == 2 and pe.stats()["pending"] == 1
    pe.add_truth(truth("radar", 7, 899_990 * MS))
    pe.add_truth(truth("camera", 21, 899_990 * MS))
    assert pe.stats()["pairs_joined"] == 3


def test_bounded():
    pe = PairingError(max_truth=10, max_pending=5)
    for k in range(100):
        pe.add_truth(truth("radar", k, k * MS))
        pe.add_pair(("radar0", 10_000 + k), ("camera0", k), 0)
    assert len(pe.truth) == 10 and len(pe.pending) == 5
    assert pe.stats()["pairs_without_truth"] == 95


def test_uart_wire_time_is_the_drivers_own_meta_field(shared_fixtures):
    """#17: sync subtracts exactly the wire time the UART driver writes (meta uart_time_s), nothing guessed.
    Real frames: the AWR1642 SDK 3.6 capture through UartParser and UartRadar._frame (the driver's own meta),
    then capture.daemon.radar_message (the wire message) into SyncProcessor."""
    from capture.daemon import radar_message
    from drivers.ti.cfg import parse_cfg
    from drivers.ti.radar import UartRadar
    from drivers.ti.uart import UartParser
    from radvis.config import load
    from sync.daemon import SyncProcessor
    base = shared_fixtures / "ti" / "AWR1632BOOST_mmWaveRadar"
    rcfg = parse_cfg(base / "cfgs" / "AWR1642-SDK_3_6_0.cfg")
    drv = UartRadar(rcfg, "loop://", "loop://", data_baud=921600)
    frames = UartParser(rcfg.profile).feed((base / "test_data" / "AWR1642_test_data_SDK_3_6_0.dat").read_bytes())
    msgs = [radar_message(f, "radar0") for f in (drv._frame(fr) for fr in frames[:5]) if f is not None]
    assert msgs and all(m.meta["uart_time_s"] == m.meta["uart_bytes"] * 10 / 921600 for m in msgs)
    on, off = (SyncProcessor(load(None, [f"sync.uart_tx_correction={v}", "sync.radar_latency_ms=0"]))
               for v in ("true", "false"))
    m = msgs[0]
    m.t_mono_ns = 10**12
    a, b = on._stamp(m), off._stamp(m)
    assert b.t_ns - a.t_ns == round(m.meta["uart_time_s"] * 1e9) > 0  # the first byte, not the last
    # fields no producer writes are not read: only uart_bytes/packet_bytes/total_packet_len -> no correction
    m2 = msgs[1]
    del m2.meta["uart_time_s"]
    m2.meta.update(packet_bytes=4000, total_packet_len=4000)
    m2.t_mono_ns = 10**12
    p = SyncProcessor(load(None, ["sync.radar_latency_ms=0"]))
    assert p._stamp(m2).t_ns == 10**12
