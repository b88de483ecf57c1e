"""Radar capture entry point: `open_radar(cfg) -> RadarSource`, iterating yields `RadarFrame`s.

UART mode: open the data port, configure the board through its CLI port (the cfg is validated first, so a
bad cfg fails before anything is sent), then stream the data port through the validating TLV parser.
With `cfg.radar.emulated` the emulated board (`sim/ti_device.py`) is started on ptys and driven
through exactly the same code path as hardware.

Timestamps: `t_device_ns = frameNumber × framePeriod` (the device's frame clock); `t_mono_ns`/`t_wall_ns`
are taken when the packet's last byte was parsed. The packet took `meta["uart_time_s"]` on the wire at the
configured baud rate, so its frame ended roughly `uart_time_s` (+ the demo's processing time) earlier.
A vanished port raises RadarError; the capture daemon reopens with backoff.

DCA1000 mode (`radar.mode = "dca1000"`, cfg with `lvdsStreamCfg -1 0 1 0`): the DCA1000 starts recording
first, the radar is configured over its CLI port, and every raw ADC frame becomes an RA map
(`drivers.ti.dsp.ra_map`); meta carries the frame's completeness and lost bytes.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import serial

from drivers.ti import tlv as tlvmod
from drivers.ti.cfg import CfgError, RadarCfg, parse_cfg
from drivers.ti.cli_port import CliError, CliPort
from drivers.ti.uart import UartParser
from radvis.frames import RESTART_JUMP, is_restart

log = logging.getLogger("radvis.ti.radar")
REPO = Path(__file__).resolve().parents[2]

try:
    from drivers.ti import dsp as _dsp
except ImportError:          # the DSP module is optional for UART mode: frames then carry no "ra"
    _dsp = None


class RadarError(RuntimeError):
    """The radar cannot be opened or has gone away (port vanished, no frames): reopen with backoff."""


@dataclass
class RadarFrame:
    frame_number: int
    t_device_ns: int | None
    t_mono_ns: int
    t_wall_ns: int
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)


def resolve_cfg_path(path: str, config_source: str | None = None) -> Path:
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    for base in ([Path(config_source).parent] if config_source and config_source != "<defaults>" else []) + [REPO]:
        if (base / p).exists():
            return base / p
    return p


def _stop_sensor(cli) -> None:
    """Best effort `sensorStop` and close: the board may already be gone."""
    if cli is None:
        return
    try:
        cli.send("sensorStop", 1.0)
    except CliError:
        pass
    cli.close()


class UartRadar:
    """The demo's UART output as RadarFrames. Open with `.open()`; iterate; `.close()`."""

    RESTART_JUMP = RESTART_JUMP  # one threshold for drivers and sync (radvis/frames.py)

    def __init__(self, rcfg: RadarCfg, cli_url: str, data_url: str, *, cli_baud: int = 115200,
                 data_baud: int = 921600, source_id: str = "radar0", emulator=None, stall_timeout_s: float | None = None,
                 mode: str = "uart"):
        self.rcfg, self.cli_url, self.data_url = rcfg, cli_url, data_url
        self.cli_baud, self.data_baud, self.source_id = cli_baud, data_baud, source_id
        self.emulator, self.mode = emulator, mode
        period = rcfg.profile.frame_period_ms / 1000.0
        self.stall_timeout_s = stall_timeout_s if stall_timeout_s is not None else max(2.0, 20 * period)
        self.parser = UartParser(rcfg.profile)
        self.data = None
        self.cli = None
        self.replies = []
        self.late_dropped = 0
        self.restarts = 0
        self._last_fn = None
        self._closed = False

    def open(self) -> "UartRadar":
        try:
            self.data = serial.serial_for_url(self.data_url, baudrate=self.data_baud, timeout=0.05)
        except (serial.SerialException, ValueError, OSError) as e:
            raise RadarError(f"cannot open data port {self.data_url!r}: {e}") from None
        try:
            self.cli = CliPort(self.cli_url, self.cli_baud)
            self.replies = self.cli.configure(self.rcfg.lines, source=self.rcfg.source)
        except CliError as e:
            self.close()
            raise RadarError(str(e)) from None
        return self

    @property
    def stats(self) -> dict:
        d = self.parser.stats.to_dict()
        d["late_dropped"] = self.late_dropped
        d["restarts"] = self.restarts
        return d

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        _stop_sensor(self.cli)
        if self.data is not None:
            self.data.close()
        if self.emulator is not None:
            self.emulator.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __iter__(self):
        last_rx = time.monotonic()
        while not self._closed:
            try:
                chunk = self.data.read(max(1, self.data.in_waiting))
            except (serial.SerialException, OSError, TypeError, AttributeError) as e:
                if self._closed:
                    return
                raise RadarError(f"data port {self.data_url!r} failed: {e}") from None
            now = time.monotonic()
            if not chunk:
                if now - last_rx > self.stall_timeout_s:
                    raise RadarError(f"no data on {self.data_url!r} for {now - last_rx:.1f} s")
                continue
            last_rx = now
            for f in self.parser.feed(chunk):
                out = self._frame(f)
                if out is not None:
                    yield out

    def _frame(self, f) -> RadarFrame | None:
        fn = f.frame_number
        if self._last_fn is not None and fn <= self._last_fn:
            if not is_restart(self._last_fn, fn):
                self.late_dropped += 1   # duplicates and late packets would break time order downstream
                return None
            self.restarts += 1           # the frame counter went far back: the device restarted
        self._last_fn = fn
        t_mono, t_wall = time.monotonic_ns(), time.time_ns()
        prof = self.rcfg.profile
        tl = f.tlvs
        arrays = {}
        if 1 in tl:
            arrays["points"] = np.ascontiguousarray(tl[1]["points"], np.float32)
        if 7 in tl:
            arrays["side_info"] = np.ascontiguousarray(tl[7]["snr_noise_db"], np.float32)
        if 2 in tl:
            arrays["range_profile"] = tl[2]["log2_mag"]
        if 3 in tl:
            arrays["noise_profile"] = tl[3]["log2_mag"]
        if 5 in tl:
            arrays["range_doppler"] = np.ascontiguousarray(tl[5]["log2_mag"])
        hm = tl.get(4, tl.get(8))
        if hm is not None and _dsp is not None and hm["heatmap"].ndim == 2:
            az = hm["heatmap"][:, :prof.num_virtual_azimuth]
            arrays["ra"] = np.ascontiguousarray(_dsp.ra_from_azimuth_heatmap(az, prof), np.float32)
        meta = {"frame_number": fn, "cfg_digest": self.rcfg.digest, "frame_period_ms": prof.frame_period_ms,
                "mode": self.mode, "units": {k: tlvmod.UNITS[k] for k in ("points", "range_profile", "ra")},
                "platform": f"0x{f.platform:X}", "sdk": f.sdk, "time_cpu_cycles": f.time_cpu_cycles,
                "subframe": f.subframe_number, "num_points": f.num_detected_obj,
                "uart_bytes": f.total_packet_len, "uart_time_s": f.total_packet_len * 10 / self.data_baud,
                "tlv_types": list(f.tlv_types)}
        if 6 in tl:
            meta["device_stats"] = tl[6]
        if 9 in tl:
            meta["temperature_c"] = tl[9]["temp_c"]
        if self.emulator is not None:
            truth = self.emulator.truth.get(fn)
            if truth is not None:
                meta["truth"] = _plain(truth)
        t_dev = int(round(fn * prof.frame_period_ms * 1e6))
        return RadarFrame(fn, t_dev, t_mono, t_wall, arrays, meta)


def _plain(v):
    """JSON-safe copy (numpy scalars from the simulator become Python numbers)."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    return v


def make_source(cfg):
    """The emulated board's frame source: the scene simulator when present, else point targets."""
    try:
        from sim.scene_source import SceneRadarSource
    except ImportError:
        from sim.source import PointTargetSource
        return PointTargetSource(seed=cfg.scene.seed, noise=cfg.scene.noise)
    return SceneRadarSource.from_config(cfg)


def open_radar(cfg, *, source=None):
    """Open the radar described by `cfg.radar` (a radvis Config). Returns an opened source; iterate it."""
    r = cfg.radar
    path = resolve_cfg_path(r.cfg, getattr(cfg, "source", None))
    try:
        rcfg = parse_cfg(path)
    except CfgError as e:
        raise RadarError(f"radar.cfg: {e}") from None
    for w in rcfg.warnings:  # e.g. DCA1000 frames that are not a multiple of the 1456-byte packet
        log.warning("radar.cfg: %s", w)
    if r.mode == "dca1000":
        return _open_dca(cfg, rcfg, source)
    emu = None
    cli_url, data_url = r.cli_port, r.data_port
    if r.emulated:
        from sim.ti_device import EmulatedTI
        try:
            emu = EmulatedTI(rcfg.text(), source if source is not None else make_source(cfg),
                             faults=r.faults, mode=r.mode).start()
        except ValueError as e:
            raise RadarError(str(e)) from None
        cli_url, data_url = emu.cli_port_url, emu.data_port_url
    elif not cli_url or not data_url:
        raise RadarError("radar.cli_port and radar.data_port must be set when radar.emulated = false "
                         "(e.g. /dev/ttyACM0 and /dev/ttyACM1, see docs/hardware.md)")
    src = UartRadar(rcfg, cli_url, data_url, cli_baud=r.cli_baud, data_baud=r.data_baud, source_id=r.source,
                    emulator=emu, mode=r.mode, stall_timeout_s=getattr(r, "data_timeout_s", 0.0) or None)
    try:
        return src.open()
    except RadarError:
        if emu is not None:
            emu.stop()
        raise


class DcaRadar:
    """Raw-ADC mode: the DCA1000 records LVDS data (started before the radar so byte counts are frame
    aligned), the radar is configured over its CLI port, every frame becomes an RA map via drivers.ti.dsp.
    Frame k of the byte stream (0-based) is the device's frame k+1, so numbers match UART mode."""

    def __init__(self, rcfg: RadarCfg, capture, cli_url: str, *, cli_baud: int = 115200, emulator=None,
                 stall_timeout_s: float | None = None, ra_chirp: int = -1):
        self.rcfg, self.capture, self.cli_url, self.cli_baud, self.emulator = rcfg, capture, cli_url, cli_baud, emulator
        if ra_chirp >= rcfg.profile.num_loops:
            raise RadarError(f"radar.ra_chirp = {ra_chirp} but {rcfg.source} has {rcfg.profile.num_loops} loops per frame")
        self.ra_chirp = None if ra_chirp < 0 else ra_chirp
        period = rcfg.profile.frame_period_ms / 1000.0
        self.stall_timeout_s = stall_timeout_s if stall_timeout_s is not None else max(2.0, 20 * period)
        self.cli = None
        self.mode = "dca1000"
        self._closed = False

    def open(self) -> "DcaRadar":
        try:
            self.capture.start()
        except Exception as e:          # DcaError, socket errors: the board is not there
            self.close()
            raise RadarError(f"DCA1000: {e}") from None
        try:
            self.cli = CliPort(self.cli_url, self.cli_baud)
            self.cli.configure(self.rcfg.lines, source=self.rcfg.source)
        except CliError as e:
            self.close()
            raise RadarError(str(e)) from None
        return self

    @property
    def stats(self) -> dict:
        st = self.capture.stats
        return st.to_dict() if hasattr(st, "to_dict") else dict(vars(st))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        _stop_sensor(self.cli)
        try:
            self.capture.close()
        except Exception as e:       # a vanished board must not stop the reopen
            log.warning("DCA1000 close: %s", e)
        if self.emulator is not None:
            self.emulator.stop()

    def __iter__(self):
        prof = self.rcfg.profile
        last = time.monotonic()
        while not self._closed:
            try:
                got = self.capture.poll(0.2)
            except OSError as e:
                if self._closed:
                    return
                raise RadarError(f"DCA1000 receive failed: {e}") from None
            now = time.monotonic()
            if not got:
                if now - last > self.stall_timeout_s:
                    raise RadarError(f"no DCA1000 data for {now - last:.1f} s")
                continue
            last = now
            for raw, adc in got:
                fn = raw.frame_number + 1
                arrays = {}
                if _dsp is not None:
                    arrays["ra"] = np.ascontiguousarray(_dsp.ra_map(adc, prof, chirp=self.ra_chirp), np.float32)
                meta = {"frame_number": fn, "cfg_digest": self.rcfg.digest, "frame_period_ms": prof.frame_period_ms,
                        "mode": "dca1000", "units": {"ra": tlvmod.UNITS["ra"]}, "complete": bool(raw.complete),
                        "ra_chirp": -1 if self.ra_chirp is None else self.ra_chirp,
                        "lost_bytes": int(raw.lost_bytes), "packets": int(raw.packets)}
                if self.emulator is not None:
                    truth = self.emulator.truth.get(fn)
                    if truth is not None:
                        meta["truth"] = _plain(truth)
                yield RadarFrame(fn, int(round(fn * prof.frame_period_ms * 1e6)), raw.t_last_ns or time.monotonic_ns(),
                                 time.time_ns(), arrays, meta)


def _open_dca(cfg, rcfg: RadarCfg, source=None):
    r = cfg.radar
    fmt = [ln.args for ln in rcfg.lines if ln.command == "lvdsStreamCfg"]
    if not fmt or len(fmt[-1]) < 3 or fmt[-1][2] == "0":
        raise RadarError(f"radar.cfg {rcfg.source}: mode dca1000 needs raw ADC over LVDS "
                         "(lvdsStreamCfg -1 0 1 0); use drivers/ti/cfgs/radvis_iwr1843_dca.cfg")
    try:
        from drivers.ti.dca1000_capture import DCA1000Capture
    except ImportError as e:
        raise RadarError(f"mode dca1000 needs drivers.ti.dca1000_capture: {e}") from None
    try:
        cap = DCA1000Capture.from_config(r, rcfg.profile)
    except (OSError, ValueError) as e:
        raise RadarError(f"DCA1000: {e}") from None
    emu, cli_url = None, r.cli_port
    if r.emulated:
        from sim.ti_device import EmulatedTI
        # faults act on the UDP stream (the DCA1000 emulator); the UART data port is not read in this mode
        emu = EmulatedTI(rcfg.text(), source if source is not None else make_source(cfg), mode="dca1000",
                         raw_sink=lambda fn, adc, t: cap.emulator.send_frame(adc)).start()
        cli_url = emu.cli_port_url
    elif not cli_url:
        cap.close()
        raise RadarError("radar.cli_port must be set when radar.emulated = false (the radar is configured "
                         "over its CLI port also in dca1000 mode)")
    src = DcaRadar(rcfg, cap, cli_url, cli_baud=r.cli_baud, emulator=emu,
                   stall_timeout_s=getattr(r, "data_timeout_s", 0.0) or None, ra_chirp=r.ra_chirp)
    return src.open()
