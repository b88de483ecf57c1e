"""Radar capture entry point: `open_radar(cfg.radar) -> RadarSource`, iterating yields `RadarFrame`s.

The driver opens what the [radar] config names, as on hardware: a pyserial URL or device path for the CLI
and data ports (/dev/ttyACM0, socket://HOST:PORT behind ser2net), the DCA1000's UDP addresses. An emulated
board (the `emulate-radar` stage, sim/) is reached the same way; the driver cannot tell and never imports it.

UART mode: open the data port, configure the board through its CLI port (the cfg is validated first, so a
bad cfg fails before anything is sent), then stream the data port through the validating TLV parser.

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
import select
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import serial

from drivers.ti import dsp
from drivers.ti import tlv as tlvmod
from drivers.ti.cfg import CfgError, RadarCfg, parse_cfg
from drivers.ti.cli_port import CliError, CliPort
from drivers.ti.dca1000_capture import DCA1000Capture
from drivers.ti.uart import UartParser
from radvis import chirps as chirp_stack
from radvis.config import ConfigError, resolve_path
from radvis.frames import RESTART_JUMP, is_restart

log = logging.getLogger("radvis.ti.radar")
REPO = Path(__file__).resolve().parents[2]


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
    """radar.cfg as a file: radvis.config.resolve_path (cwd, the config's directory, the checkout)."""
    return resolve_path(path, config_source)


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
                 data_baud: int = 921600, source_id: str = "radar0", stall_timeout_s: float | None = None,
                 mode: str = "uart"):
        self.rcfg, self.cli_url, self.data_url = rcfg, cli_url, data_url
        self.cli_baud, self.data_baud, self.source_id = cli_baud, data_baud, source_id
        self.mode = mode
        period = rcfg.profile.frame_period_ms / 1000.0
        self.stall_timeout_s = stall_timeout_s if stall_timeout_s is not None else max(2.0, 20 * period)
        self.parser = UartParser(rcfg.profile)
        self.data = None
        self.cli = None
        self.replies = []
        self.late_dropped = 0
        self.restarts = 0
        self._last_fn = None
        self._fd = None
        self._closed = False

    def open(self) -> "UartRadar":
        try:
            # non-blocking reads; `_read` waits for the port itself (in_waiting is a byte count on a tty but
            # only 0/1 on socket://, where reading in_waiting bytes would take the stream one byte at a time)
            self.data = serial.serial_for_url(self.data_url, baudrate=self.data_baud, timeout=0)
        except (serial.SerialException, ValueError, OSError) as e:
            raise RadarError(f"cannot open data port {self.data_url!r}: {e}") from None
        try:
            self._fd = self.data.fileno()
        except (AttributeError, OSError, NotImplementedError, serial.SerialException):
            self._fd = None             # rfc2217://, loop://: no descriptor to wait on
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

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __iter__(self):
        last_rx = time.monotonic()
        while not self._closed:
            try:
                chunk = self._read()
            except (serial.SerialException, OSError, TypeError, AttributeError, ValueError) as e:
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

    def _read(self, wait_s: float = 0.05) -> bytes:
        """Whatever the port has, waiting at most `wait_s` for the first byte."""
        if self._fd is not None:
            r, _, _ = select.select([self._fd], [], [], wait_s)
            return self.data.read(1 << 16) if r else b""
        chunk = self.data.read(1 << 16)
        if not chunk:
            time.sleep(0.005)
        return chunk

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
        if hm is not None and hm["heatmap"].ndim == 2:
            az = hm["heatmap"][:, :prof.num_virtual_azimuth]
            arrays["ra"] = np.ascontiguousarray(dsp.ra_from_azimuth_heatmap(az, prof), np.float32)
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
        t_dev = int(round(fn * prof.frame_period_ms * 1e6))
        return RadarFrame(fn, t_dev, t_mono, t_wall, arrays, meta)


def _is_url(port: str) -> bool:
    return "://" in port   # pyserial URLs: socket://, rfc2217://, loop://, spy://


def _is_loopback(host: str) -> bool:
    return host.startswith("127.") or host in ("localhost", "::1")


def _raw_adc_over_lvds(rcfg: RadarCfg) -> bool:
    fmt = [ln.args for ln in rcfg.lines if ln.command == "lvdsStreamCfg"]
    return bool(fmt) and len(fmt[-1]) >= 3 and fmt[-1][2] != "0"


def check_config(r, config_source: str | None = None) -> RadarCfg:
    """Configuration mistakes, found before the first open: each raises radvis.config.ConfigError naming the
    key to fix, and the capture exits 2 (the rig does not restart it). Only what can go away and come back
    (a board unplugged after it streamed, a DCA1000 that stops answering) is left to the reopen loop.
    Returns the parsed radar.cfg."""
    where = f" ({config_source})" if config_source and config_source != "<defaults>" else ""
    path = resolve_cfg_path(r.cfg, config_source)
    try:
        rcfg = parse_cfg(Path(path))
    except CfgError as e:
        raise ConfigError(f"radar.cfg{where}: {e}") from None
    ports = [("cli_port", r.cli_port)] + ([("data_port", r.data_port)] if r.mode == "uart" else [])
    for key, port in ports:
        if not port:
            raise ConfigError(f"radar.{key}{where}: empty, but radar.mode = {r.mode!r} needs it: set it to the "
                              f"board's {'CLI' if key == 'cli_port' else 'data'} port (e.g. "
                              f"{'/dev/ttyACM0' if key == 'cli_port' else '/dev/ttyACM1'}, or a socket:// URL; "
                              f"docs/hardware.md)")
        if not _is_url(port) and not Path(port).exists():
            raise ConfigError(f"radar.{key}{where}: {port!r} does not exist (board not plugged in, or another "
                              f"name: `ls -l /dev/serial/by-id/`; the emulated board serves socket:// URLs; "
                              f"docs/hardware.md)")
    if r.mode == "uart":
        if (err := chirp_stack.uart_error(r, where)):
            raise ConfigError(err)
        if r.cli_port == r.data_port:
            raise ConfigError(f"radar.cli_port and radar.data_port{where} are both {r.cli_port!r}: the board has "
                              f"two ports (CLI at 115200, data at 921600; docs/hardware.md)")
        return rcfg
    # dca1000
    if not _raw_adc_over_lvds(rcfg):
        raise ConfigError(f"radar.cfg{where}: {rcfg.source} does not stream raw ADC over LVDS (lvdsStreamCfg -1 0 1 "
                          f"0), which radar.mode = \"dca1000\" needs: use drivers/ti/cfgs/radvis_iwr1843_dca.cfg, or "
                          f"set radar.mode = \"uart\" for the UART TLV stream")
    if r.dca_host == r.dca_board:
        raise ConfigError(f"radar.dca_host and radar.dca_board{where} are both {r.dca_host!r}: the host would talk to "
                          f"itself; on hardware dca_host = \"192.168.33.30\" (this NIC), dca_board = "
                          f"\"192.168.33.180\" (the FPGA)")
    if not _is_url(r.cli_port) and _is_loopback(r.dca_board):
        raise ConfigError(f"radar.dca_board{where} = {r.dca_board!r} is a loopback address (the emulated DCA1000) "
                          f"while radar.cli_port = {r.cli_port!r} is a real serial port: for the UART TLV stream "
                          f"set radar.mode = \"uart\" and radar.cfg = \"drivers/ti/cfgs/radvis_iwr1843.cfg\"; for a "
                          f"DCA1000 set radar.dca_host = \"192.168.33.30\" and radar.dca_board = \"192.168.33.180\" "
                          f"(docs/hardware.md)")
    return rcfg


def open_radar(r, *, config_source: str | None = None):
    """Open the radar described by `r`, the config's [radar] section (`config_source`: the config file, for
    a relative radar.cfg). Returns an opened source; iterate it. Every failure is a RadarError (the capture
    reopens); `check_config` tells configuration mistakes apart before the first open."""
    path = resolve_cfg_path(r.cfg, config_source)
    try:
        rcfg = parse_cfg(Path(path))
    except CfgError as e:
        raise RadarError(f"radar.cfg: {e}") from None
    for w in rcfg.warnings:  # e.g. DCA1000 frames that are not a multiple of the 1456-byte packet
        log.warning("radar.cfg: %s", w)
    if r.mode == "dca1000":
        return _open_dca(r, rcfg)
    if not r.cli_port or not r.data_port:
        raise RadarError("radar.cli_port and radar.data_port must name the board's ports in uart mode "
                         "(e.g. /dev/ttyACM0 and /dev/ttyACM1, or socket:// URLs; see docs/hardware.md)")
    src = UartRadar(rcfg, r.cli_port, r.data_port, cli_baud=r.cli_baud, data_baud=r.data_baud, source_id=r.source,
                    mode=r.mode, stall_timeout_s=r.data_timeout_s or None)
    return src.open()


class DcaRadar:
    """Raw-ADC mode: the DCA1000 records LVDS data (started before the radar so byte counts are frame
    aligned), the radar is configured over its CLI port, every frame becomes an RA map via drivers.ti.dsp.
    Frame k of the byte stream (0-based) is the device's frame k+1, so numbers match UART mode."""

    def __init__(self, rcfg: RadarCfg, capture, cli_url: str, *, cli_baud: int = 115200,
                 stall_timeout_s: float | None = None, ra_chirp: int = -1, ra_chirps=()):
        self.rcfg, self.capture, self.cli_url, self.cli_baud = rcfg, capture, cli_url, cli_baud
        for key, c in [("ra_chirp", ra_chirp)] + [("ra_chirps", c) for c in ra_chirps]:
            if c >= rcfg.profile.num_loops:
                raise RadarError(f"radar.{key} names chirp {c} but {rcfg.source} has {rcfg.profile.num_loops} loops "
                                 f"per frame")
        self.ra_chirp = None if ra_chirp < 0 else ra_chirp
        self.ra_chirps = tuple(int(c) for c in ra_chirps)
        # the cfg's clutterRemoval: as the SDK does on the device, the frame's mean chirp is subtracted
        self.clutter_removal = rcfg.static_clutter_removal
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
                arrays = {"ra": np.ascontiguousarray(dsp.ra_map(adc, prof, chirp=self.ra_chirp,
                                                                 clutter_removal=self.clutter_removal), np.float32)}
                if self.ra_chirps:
                    arrays["ra_chirps"] = self.chirp_maps(adc, arrays["ra"])
                meta = {"frame_number": fn, "cfg_digest": self.rcfg.digest, "frame_period_ms": prof.frame_period_ms,
                        "mode": "dca1000", "units": {"ra": tlvmod.UNITS["ra"]}, "complete": bool(raw.complete),
                        "ra_chirp": -1 if self.ra_chirp is None else self.ra_chirp,
                        "static_clutter_removal": self.clutter_removal,
                        "lost_bytes": int(raw.lost_bytes), "packets": int(raw.packets)}
                if self.ra_chirps:
                    meta["ra_chirps"] = list(self.ra_chirps)
                    meta["units"]["ra_chirps"] = tlvmod.UNITS["ra_chirps"]
                yield RadarFrame(fn, int(round(fn * prof.frame_period_ms * 1e6)), raw.t_last_ns or time.monotonic_ns(),
                                 time.time_ns(), arrays, meta)


    def chirp_maps(self, adc, ra) -> np.ndarray:
        """(128, 128, 2C) float32: the CRUW-style map of each of `ra_chirps`, stacked on the last axis (the
        frame's `ra` is reused where it is one of them)."""
        maps = [ra if c == self.ra_chirp else dsp.ra_map(adc, self.rcfg.profile, chirp=c,
                                                         clutter_removal=self.clutter_removal) for c in self.ra_chirps]
        return chirp_stack.stack(maps)


def _open_dca(r, rcfg: RadarCfg):
    fmt = [ln.args for ln in rcfg.lines if ln.command == "lvdsStreamCfg"]
    if not fmt or len(fmt[-1]) < 3 or fmt[-1][2] == "0":
        raise RadarError(f"radar.cfg {rcfg.source}: mode dca1000 needs raw ADC over LVDS "
                         "(lvdsStreamCfg -1 0 1 0); use drivers/ti/cfgs/radvis_iwr1843_dca.cfg")
    if not r.cli_port:
        raise RadarError("radar.cli_port must name the board's CLI port (the radar is configured over it also in "
                         "dca1000 mode; see docs/hardware.md)")
    try:
        cap = DCA1000Capture.from_config(r, rcfg.profile)
    except (OSError, ValueError) as e:
        raise RadarError(f"DCA1000: {e}") from None
    try:
        src = DcaRadar(rcfg, cap, r.cli_port, cli_baud=r.cli_baud, stall_timeout_s=r.data_timeout_s or None,
                       ra_chirp=r.ra_chirp, ra_chirps=r.ra_chirps)
    except RadarError:
        cap.close()
        raise
    return src.open()
