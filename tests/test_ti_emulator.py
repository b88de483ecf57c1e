"""Emulated TI board <-> driver round trips over real ptys and TCP ports: configuration through the CLI port,
TLV frames on the data port, every fault-injection mode with exact counts, and the capture entry point
open_radar opening the ports the config names (the emulator serves them as hardware would be reached)."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest
import serial

from drivers.ti import dsp
from drivers.ti.cfg import parse_cfg
from drivers.ti.cli_port import CliPort
from drivers.ti.radar import RadarError, open_radar
from drivers.ti.uart import UartParser
from radvis import config as configmod
from sim.emulate import RadarEmulator
from sim.source import PointTargetSource
from sim.ti_device import EmulatedTI

RADVIS_CFG = "drivers/ti/cfgs/radvis_iwr1843.cfg"
PERIOD_MS = 20
FAST = open(RADVIS_CFG).read().replace("frameCfg 0 1 64 0 100 1 0", f"frameCfg 0 1 16 0 {PERIOD_MS} 1 0")


def run_device(n_frames: int, faults=None, source=None, cfg_text=FAST):
    """Configure an emulated board over its CLI pty, read its data pty until it generated n_frames,
    stop the sensor and drain. Returns (parser, frames, emulator, radar cfg)."""
    rc = parse_cfg(cfg_text)
    truths = {}
    emu = EmulatedTI(cfg_text, source or PointTargetSource(), faults=faults,
                     on_frame=lambda fn, t, content: truths.__setitem__(fn, content.truth)).start()
    emu.test_truths = truths
    try:
        data = serial.serial_for_url(emu.data_port_url, baudrate=921600, timeout=0.02)
        parser, frames = UartParser(rc.profile), []
        with CliPort(emu.cli_port_url) as cli, data:
            cli.configure(rc.lines)
            deadline = time.monotonic() + 20
            got = 0
            while emu.counts["frames"] < n_frames and time.monotonic() < deadline:
                chunk = data.read(65536)
                got += len(chunk)
                frames += parser.feed(chunk)
            cli.send("sensorStop")  # acknowledged: the board sends nothing more, so drain what it did send
            deadline = time.monotonic() + 20
            while (got < emu.counts["bytes_sent"] or emu.pending_bytes) and time.monotonic() < deadline:
                chunk = data.read(65536)
                got += len(chunk)
                frames += parser.feed(chunk)
            frames += parser.flush()
    finally:
        emu.stop()
    return parser, frames, emu, rc


def test_round_trip_headers_tlvs_and_timing():
    parser, frames, emu, rc = run_device(12)
    n = emu.counts["sent"]
    assert n >= 12 and len(frames) == n == parser.stats.frames
    assert [f.frame_number for f in frames] == list(range(1, n + 1))
    assert parser.stats.bytes_skipped == 0 and not parser.stats.rejected and parser.stats.lost == 0
    assert parser.stats.bytes_in == emu.counts["bytes_sent"]
    for f in frames:
        assert (f.version, f.platform, f.header_len, f.subframe_number) == (0x03050004, 0xA1843, 40, 0)
        assert f.tlv_types == [1, 7, 2, 3, 4, 6, 9]          # guiMonitor -1 1 1 1 1 0 1, firmware order
        assert f.total_packet_len % 32 == 0
        assert f.tlvs[4]["heatmap"].shape == (rc.profile.num_range_bins, 8)
        assert f.tlvs[2]["log2_mag"].shape == (128,)
        used = 40 + sum(8 + f.spans[t][1] for t in f.tlv_types)
        assert f.total_packet_len - used < 32
        assert all(b != 0 for b in f.raw[used:])             # padding is garbage, never zero
    # timeCpuCycles: 200 MHz, one frame period apart
    d = np.diff([f.time_cpu_cycles for f in frames]) % (1 << 32)
    assert np.all(np.abs(d - 200e6 * PERIOD_MS / 1000) <= 1)
    # the points are the source's targets: a reflector at 6 m, -25 deg, and the walker at 20 deg
    pts = frames[0].points
    assert pts.shape == (2, 4)
    np.testing.assert_allclose(pts[0, :2], [6 * math.sin(math.radians(-25)), 6 * math.cos(math.radians(-25))],
                               atol=1e-5)
    snr_db = frames[0].tlvs[7]["snr_noise_db"][:, 0]
    assert np.all(snr_db > 20)
    assert emu.test_truths[1]["objects"][0]["cls"] == "pedestrian"   # on_frame sees every captured frame
    assert sorted(emu.test_truths) == list(range(1, emu.counts["frames"] + 1))


def test_heatmap_tlv_gives_the_target_in_the_ra_map():
    src = PointTargetSource(targets=[{"cls": "car", "range_m": 9.0, "azimuth_rad": math.radians(15),
                                      "velocity_mps": 0.0, "amplitude": 800.0}])
    parser, frames, emu, rc = run_device(2, source=src)
    hm = frames[0].tlvs[4]["heatmap"]
    assert np.iscomplexobj(hm)
    # range profile and heatmap peak at the target's range bin
    rbin = 9.0 / rc.profile.range_step_m
    assert abs(int(np.argmax(np.abs(hm).sum(1))) - rbin) <= 1
    assert abs(int(np.argmax(frames[0].tlvs[2]["log2_mag"])) - rbin) <= 1
    ra = dsp.ra_from_azimuth_heatmap(hm, rc.profile)
    mag = np.hypot(ra[..., 0], ra[..., 1])
    i, j = np.unravel_index(np.argmax(mag), mag.shape)
    assert abs(dsp.range_grid()[i] - 9.0) < 0.5
    assert abs(dsp.azimuth_grid()[j] - math.radians(15)) < math.radians(4)


def _before_last(fns, frames):
    last = frames[-1].frame_number
    return [fn for fn in fns if fn < last]


def test_fault_drop_exact():
    parser, frames, emu, _ = run_device(15, {"drop_every": 3})
    dropped = emu.fault_frames["dropped"]
    assert emu.counts["dropped"] == len(dropped) >= 4 and all(fn % 3 == 0 for fn in dropped)
    assert parser.stats.lost == len(_before_last(dropped, frames))
    assert len(frames) == emu.counts["sent"] and not set(dropped) & {f.frame_number for f in frames}


def test_fault_duplicate_exact():
    parser, frames, emu, _ = run_device(12, {"duplicate_every": 4})
    assert emu.counts["duplicated"] == len(emu.fault_frames["duplicated"]) >= 3
    assert parser.stats.duplicates == emu.counts["duplicated"] and parser.stats.lost == 0
    assert len(frames) == emu.counts["sent"]


def test_fault_reorder_exact():
    parser, frames, emu, _ = run_device(12, {"reorder_every": 5})
    held = emu.fault_frames["reordered"]
    order = [f.frame_number for f in frames]
    # a frame held back when sensorStop came is flushed in order (it has no successor): not reordered.
    # Whether the last one was depends on where the emulator was at the stop, so count what happened.
    reordered = [fn for fn in held if fn + 1 in order]
    assert len(reordered) >= 2 and len(held) - len(reordered) <= 1
    assert parser.stats.reordered == len(reordered) and parser.stats.lost == 0 and parser.stats.duplicates == 0
    for fn in held:
        if fn + 1 in order:
            assert order.index(fn) == order.index(fn + 1) + 1      # arrived right after its successor


def test_fault_corrupt_magic_exact():
    parser, frames, emu, _ = run_device(12, {"corrupt_every": 3, "corrupt_region": "magic", "seed": 7})
    bad = emu.fault_frames["corrupted"]
    assert len(bad) >= 3
    assert parser.stats.lost == len(_before_last(bad, frames))
    assert len(frames) == emu.counts["sent"] - len(bad)
    assert parser.stats.bytes_in == emu.counts["bytes_sent"]
    assert parser.stats.bytes_skipped == emu.counts["bytes_sent"] - sum(f.total_packet_len for f in frames)


def test_fault_corrupt_payload_never_loses_sync():
    parser, frames, emu, _ = run_device(12, {"corrupt_every": 2, "corrupt_region": "payload", "corrupt_bytes": 3})
    assert emu.counts["corrupted"] >= 5
    # no CRC: payload corruption is undetectable or rejects only that packet; the next one always decodes
    got = {f.frame_number for f in frames}
    assert all(fn in got for fn in range(1, emu.counts["sent"] + 1) if fn % 2)
    for f in frames:
        f.tlvs


def test_fault_stall_exact():
    parser, frames, emu, _ = run_device(20, {"stall_every": 8, "stall_s": 0.07})
    stalled = emu.fault_frames["stalled"]
    assert emu.counts["stalls"] >= 2 and len(stalled) >= emu.counts["stalls"] * 3
    assert parser.stats.lost == len(_before_last(stalled, frames))


def test_config_data_port_ack_ping_and_adc_for_the_dca1000():
    rc = parse_cfg(FAST)
    raw = []
    src = PointTargetSource(with_adc=False)     # points only: the board still streams an ADC cube over LVDS
    with EmulatedTI(FAST, src, mode="dca1000",
                    on_frame=lambda fn, t, c: raw.append((fn, c.adc.shape, c.adc.dtype))) as emu, \
            serial.serial_for_url(emu.data_port_url, timeout=0.3) as data, CliPort(emu.cli_port_url) as cli:
        r = cli.send("configDataPort 921600 1")
        assert r.lines == ["Data port baud rate changed to 921600", "Done"]
        assert data.read(16) == b"\xff" * 16                  # the documented 16-byte acknowledgement
        assert cli.send("configDataPort 4000000 0").lines[0] == "Ignored: Invalid baud rate (4000000) specified"
        cli.configure(rc.lines)
        assert cli.send("configDataPort 921600 1").lines[0] == \
            "Ignored: This command is not allowed after sensor has started"
        deadline = time.monotonic() + 5
        while len(raw) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
    # with LVDS streaming the demo still sends its UART TLVs; the DCA1000 side gets the ADC cube
    assert [fn for fn, _, _ in raw[:3]] == [1, 2, 3]
    assert raw[0][1:] == ((rc.profile.num_doppler_chirps, rc.profile.num_virtual, rc.profile.num_adc_samples),
                          np.complex64)


def test_bad_fault_key_is_a_clear_error():
    with pytest.raises(ValueError, match=r"radar.faults: unknown key\(s\) \['drop_rate'\]"):
        EmulatedTI(FAST, faults={"drop_rate": 0.1})


# ---- the capture entry point: the driver opens what the config names ---------------------------------
def radar_config(tmp_path, *, mode="uart", cfg_text=FAST, **over):
    cfg_file = tmp_path / "fast.cfg"
    cfg_file.write_text(cfg_text if mode == "uart" else cfg_text.replace("lvdsStreamCfg -1 0 0 0", "lvdsStreamCfg -1 0 1 0"))
    sets = [f"radar.cfg='{cfg_file}'", f"radar.mode='{mode}'"] + [f"radar.{k}={_toml(v)}" for k, v in over.items()]
    return configmod.load(None, sets)


def _toml(v) -> str:
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml(x)}" for k, x in v.items()) + "}"
    return repr(v)


def loopback_pair() -> tuple[str, str]:
    """A host and a board address of their own in 127/8 (as 192.168.33.30 and .180 on the real link), so the
    DCA1000's real port numbers can be used without colliding with parallel runs."""
    rng = np.random.default_rng()
    a, b = (int(x) for x in rng.integers(1, 250, 2))
    return f"127.{a}.{b}.1", f"127.{a}.{b}.2"


def emulated(cfg, source=None, truths=None):
    """The emulated board serving where cfg.radar says (what `radvis emulate radar` runs)."""
    return RadarEmulator(cfg.radar, source or PointTargetSource(),
                         truth=None if truths is None else lambda *a: truths.append(a)).start()


@pytest.mark.parametrize("ports", ["socket", "pty"])
def test_open_radar_opens_the_configured_ports(tmp_path, ports):
    """Over TCP (ser2net-style socket:// URLs) and over ptys linked at configured paths (as /dev/ttyACM0)."""
    if ports == "socket":
        cfg = radar_config(tmp_path, cli_port="socket://127.0.0.1:0", data_port="socket://127.0.0.1:0",
                           faults={"duplicate_every": 3})
    else:
        cfg = radar_config(tmp_path, cli_port=str(tmp_path / "dev" / "ttyCLI"), data_port=str(tmp_path / "dev" / "ttyDATA"),
                           faults={"duplicate_every": 3})
    truths = []
    with emulated(cfg, truths=truths) as emu:
        # the driver opens exactly the URLs the emulator serves (with port 0 the kernel chose them)
        r = cfg.radar
        r.cli_port, r.data_port = emu.board.cli_port_url, emu.board.data_port_url
        if ports == "pty":
            assert (tmp_path / "dev" / "ttyCLI").is_symlink() and r.cli_port == str(tmp_path / "dev" / "ttyCLI")
        src = open_radar(r)
        got = []
        try:
            for f in src:
                got.append(f)
                if len(got) == 6:
                    break
        finally:
            src.close()
    fns = [f.frame_number for f in got]
    assert fns == sorted(set(fns)) and fns[0] == 1                    # duplicates never reach the daemon
    assert src.late_dropped >= 1 and emu.board.counts["duplicated"] >= 1
    f = got[0]
    assert f.t_device_ns == f.frame_number * PERIOD_MS * 1_000_000
    assert f.arrays["points"].dtype == np.float32 and f.arrays["points"].shape == (2, 4)
    assert f.meta["frame_number"] == f.frame_number and f.meta["mode"] == "uart"
    assert f.meta["cfg_digest"] == parse_cfg(FAST).digest and f.meta["frame_period_ms"] == PERIOD_MS
    assert f.meta["uart_bytes"] % 32 == 0 and f.meta["uart_time_s"] == pytest.approx(f.meta["uart_bytes"] * 10 / 921600)
    assert "truth" not in f.meta                                        # the driver cannot know the scene
    assert all(g.t_mono_ns > f.t_mono_ns for g in got[1:])
    assert f.arrays["ra"].shape == (128, 128, 2) and f.arrays["ra"].dtype == np.float32
    # the truth of every frame the driver saw was reported under the driver's frame number, before it arrived
    tr = {fn: (stream, source, t) for stream, source, fn, t, _ in truths}
    for g in got:
        assert tr[g.frame_number][:2] == ("radar", "radar0") and tr[g.frame_number][2] * 1e9 < g.t_mono_ns
    if ports == "pty":
        assert not (tmp_path / "dev" / "ttyCLI").exists()                # the link goes with the emulator


def test_port_vanishing_raises_radar_error(tmp_path):
    cfg = radar_config(tmp_path, cli_port="socket://127.0.0.1:0", data_port="socket://127.0.0.1:0")
    emu = emulated(cfg)
    cfg.radar.cli_port, cfg.radar.data_port = emu.board.cli_port_url, emu.board.data_port_url
    src = open_radar(cfg.radar)
    it = iter(src)
    next(it)
    emu.close()                                                       # the board is unplugged
    with pytest.raises(RadarError):
        for _ in range(100):
            next(it)
    src.close()


def test_silent_sensor_raises_radar_error(tmp_path):
    cfg = radar_config(tmp_path, cli_port="pty", data_port="pty")
    with emulated(cfg) as emu:
        cfg.radar.cli_port, cfg.radar.data_port = emu.board.cli_port_url, emu.board.data_port_url
        src = open_radar(cfg.radar)
        try:
            src.stall_timeout_s = 0.3
            it = iter(src)
            next(it)
            src.cli.send("sensorStop")
            with pytest.raises(RadarError, match="no data"):
                for _ in range(100):
                    next(it)
        finally:
            src.close()


def test_open_radar_needs_the_ports_and_a_good_cfg(tmp_path):
    bad = tmp_path / "bad.cfg"
    bad.write_text(FAST.replace("calibData 0 0 0\n", ""))
    cfg = configmod.load(None, [f"radar.cfg='{bad}'", "radar.mode='uart'"])
    with pytest.raises(RadarError, match=r"bad.cfg:\d+: 'sensorStart'.*calibData"):
        open_radar(cfg.radar)                                         # fails before anything is opened
    cfg = radar_config(tmp_path, cli_port="", data_port="")
    with pytest.raises(RadarError, match="radar.cli_port and radar.data_port must name the board's ports"):
        open_radar(cfg.radar)
    cfg = radar_config(tmp_path, cli_port=f"socket://127.0.0.1:{_free_port()}", data_port="socket://127.0.0.1:9")
    with pytest.raises(RadarError, match="cannot open"):
        open_radar(cfg.radar)                                         # nobody there: a clear error


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("ra_chirp", [-1, 0])
def test_open_radar_dca1000_mode_end_to_end(tmp_path, ra_chirp):
    import drivers.ti.dca1000_capture  # noqa: F401  (a broken import must fail, not skip)
    host, board = loopback_pair()
    cfg = radar_config(tmp_path, mode="dca1000", cli_port="socket://127.0.0.1:0", data_port="", ra_chirp=ra_chirp,
                       dca_host=host, dca_board=board)
    truths = []
    src = PointTargetSource(targets=[
        {"cls": "car", "range_m": 9.0, "azimuth_rad": math.radians(15), "velocity_mps": 0.0, "amplitude": 800.0}])
    with RadarEmulator(cfg.radar, src, truth=lambda *a: truths.append(a), data_source_port=0).start() as emu:
        cfg.radar.cli_port = emu.board.cli_port_url
        assert emu.info()["dca_board"] == f"{board}:4096"          # the board's own address, the real port
        radar = open_radar(cfg.radar)
        got = []
        try:
            for f in radar:
                got.append(f)
                if len(got) == 3:
                    break
        finally:
            radar.close()
    assert [f.frame_number for f in got] == [1, 2, 3]
    assert all(f.meta["complete"] and f.meta["lost_bytes"] == 0 and f.meta["mode"] == "dca1000" for f in got)
    assert all(f.meta["ra_chirp"] == ra_chirp for f in got)
    assert got[0].t_device_ns == PERIOD_MS * 1_000_000
    ra = got[0].arrays["ra"]
    mag = np.hypot(ra[..., 0], ra[..., 1])
    i, j = np.unravel_index(np.argmax(mag), mag.shape)
    assert abs(dsp.range_grid()[i] - 9.0) < 0.5 and abs(dsp.azimuth_grid()[j] - math.radians(15)) < math.radians(4)
    # truth numbering follows the host's: the frame's place in the DCA1000 recording, from 1
    assert [fn for _, _, fn, _, _ in truths[:3]] == [1, 2, 3] and truths[0][4]["objects"][0]["cls"] == "car"
    assert emu.stats()["dca"]["frames"] >= 3 and emu.stats()["dca"]["failed_commands"] == 0
    # a UART cfg (no LVDS streaming) is refused before anything is opened
    with pytest.raises(RadarError, match=r"lvdsStreamCfg -1 0 1 0"):
        open_radar(configmod.load(None, [f"radar.cfg='{RADVIS_CFG}'", "radar.mode='dca1000'"]).radar)


def test_bad_emulator_config_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match=r"radar.faults: unknown key\(s\) \['drop_rate'\]"):
        RadarEmulator(radar_config(tmp_path, cli_port="pty", data_port="pty", faults={"drop_rate": 0.1}).radar, None)
    with pytest.raises(ValueError, match="must say where the emulated board serves"):
        RadarEmulator(radar_config(tmp_path, cli_port="", data_port="").radar, None)


def test_frame_number_reset_is_a_restart_not_late_frames():
    """After a device restart the frame counter starts again from 1; those frames must flow on
    (the synchroniser's clock model handles the restart), not be dropped as late."""
    from sim.ti_device import build_packet
    from drivers.ti.radar import UartRadar
    from drivers.ti.uart import UartParser
    rcfg = parse_cfg(open(RADVIS_CFG).read())
    r = UartRadar(rcfg, "loop://", "loop://")
    parser = UartParser(rcfg.profile)
    rng = np.random.default_rng(0)
    stream = b"".join(build_packet(fn, 0, [], 0, rng) for fn in [500, 501, 501, 499, 1, 2])
    kept = [f.frame_number for f in parser.feed(stream) + parser.flush() if r._frame(f) is not None]
    assert kept == [500, 501, 1, 2]
    assert (r.late_dropped, r.restarts) == (2, 1)


def test_uart_data_port_is_paced_at_its_baud_rate(monkeypatch):
    """The emulated UART sends 10 bits per byte at data_baud (what sync's uart_time_s correction assumes), on
    a controlled clock: bytes per step = elapsed x baud / 10, none saved up while the line is idle."""
    import sim.ti_device as td
    now = [100.0]
    monkeypatch.setattr(td.time, "monotonic", lambda: now[0])

    class Port:
        sent = bytearray()

        def send(self, b):
            self.sent += b
            return len(b)
    emu = EmulatedTI(None, data_baud=921600)
    emu.data_port = Port()
    emu._flush_data()                       # idle: nothing pending
    now[0] += 1.0
    emu._tx += bytes(20000)
    steps = []
    for _ in range(5):
        emu._flush_data()
        steps.append(len(emu.data_port.sent))
        now[0] += 0.01
    assert steps[0] == 0                    # the idle second earned no credit
    assert all(abs((b - a) - 921.6) <= 1 for a, b in zip(steps, steps[1:]))  # 10 ms at 92 160 B/s
    assert emu.counts["bytes_sent"] == steps[-1] and emu.pending_bytes == 20000 - steps[-1]
