"""TI mmWave demo .cfg files: parse, validate per SDK generation, derive the chirp/frame parameters.

A .cfg is the exact CLI command sequence sent to the demo's CLI port. We validate it *before* anything is
sent (argument counts per SDK generation, the commands SDK >= 3.5 requires before the first `sensorStart`)
and derive the radar parameters with the SDK's own formulas (`mmwdemo_rfparser.c`, see
`shared/reference/ti_mmwave.md` §2.3). Errors name the file, the line number and the line.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

C = 299_792_458.0  # m/s

# argc INCLUDING the command word, SDK 3.x (SDK35 cli_mmwave.c, xwr18xx mmw_cli.c). A set = several valid.
ARGC_SDK3 = {
    "sensorStop": {1}, "flushCfg": {1}, "dfeDataOutputMode": {2}, "channelCfg": {4}, "adcCfg": {3},
    "adcbufCfg": {6}, "profileCfg": {15}, "chirpCfg": {9}, "frameCfg": {8}, "advFrameCfg": {6},
    "subFrameCfg": {11}, "lowPower": {3}, "guiMonitor": {8}, "cfarCfg": {10}, "multiObjBeamForming": {4},
    "calibDcRangeSig": {6}, "clutterRemoval": {3}, "compRangeBiasAndRxChanPhase": {18, 26},
    "measureRangeBiasAndRxChanPhase": {4}, "aoaFovCfg": {6}, "cfarFovCfg": {5}, "extendedMaxVelocity": {3},
    "CQRxSatMonitor": {6}, "CQSigImgMonitor": {4}, "analogMonitor": {3}, "lvdsStreamCfg": {5},
    "bpmCfg": {5}, "calibData": {4}, "configDataPort": {3}, "sensorStart": {1, 2}, "version": {1},
    "queryDemoStatus": {1}, "help": {1}, "contModeCfg": None, "bpmCfgAdvanced": None,
}
# SDK 1.x/2.x differences: integer CFAR threshold (one argument fewer), peakGrouping, nearFieldCfg.
ARGC_SDK2 = dict(ARGC_SDK3, cfarCfg={9}, peakGrouping={7}, nearFieldCfg={5}, guiMonitor={7, 8})
for _k in ("aoaFovCfg", "cfarFovCfg", "calibData"):
    ARGC_SDK2.pop(_k)

# SDK >= 3.5 rejects the first sensorStart unless all of these were issued (MmwDemo_isAllCfgInPendingState).
REQUIRED_SDK35 = ["adcbufCfg", "lvdsStreamCfg", "guiMonitor", "cfarCfg", "cfarFovCfg", "multiObjBeamForming",
                  "calibDcRangeSig", "clutterRemoval", "aoaFovCfg", "extendedMaxVelocity",
                  "compRangeBiasAndRxChanPhase", "measureRangeBiasAndRxChanPhase", "analogMonitor", "calibData"]
# Needed by any SDK to define a frame at all.
REQUIRED_FRAME = ["channelCfg", "adcCfg", "profileCfg", "chirpCfg", "frameCfg"]


class CfgError(ValueError):
    """A bad .cfg: the message names the file, the line number, the line and what was expected."""


@dataclass
class CfgLine:
    lineno: int
    text: str
    command: str
    args: list[str]


@dataclass
class ChirpProfile:
    """The derived chirp/frame parameters (units in the names)."""
    start_freq_ghz: float
    slope_mhz_us: float
    sample_rate_ksps: float
    num_adc_samples: int
    idle_us: float
    ramp_end_us: float
    adc_start_us: float
    num_tx: int
    num_rx: int
    num_loops: int
    chirps_per_frame: int
    frame_period_ms: float
    complex_adc: bool = True
    tx_order: list = field(default_factory=list)   # TX index of each chirp in the frame's chirp order
    rx_mask: int = 15
    tx_mask: int = 5

    @property
    def num_virtual(self) -> int:
        return self.num_tx * self.num_rx

    @property
    def num_virtual_azimuth(self) -> int:
        # xWR18xx/68xx boards with 3 TX: TX1 is raised (elevation), TX0+TX2 form the 2-TX azimuth array
        return self.num_rx * (2 if self.num_tx == 3 else self.num_tx)

    @property
    def num_range_bins(self) -> int:
        return 1 << max(0, (self.num_adc_samples - 1).bit_length())

    @property
    def num_doppler_chirps(self) -> int:
        return self.chirps_per_frame // max(1, self.num_tx)

    @property
    def num_doppler_bins(self) -> int:
        return 1 << max(0, (self.num_doppler_chirps - 1).bit_length())

    @property
    def bandwidth_hz(self) -> float:
        return self.slope_mhz_us * 1e12 * self.num_adc_samples / (self.sample_rate_ksps * 1e3)

    @property
    def range_resolution_m(self) -> float:
        return C / (2 * self.bandwidth_hz)

    @property
    def range_step_m(self) -> float:
        """Metres per range-FFT bin (num_range_bins >= num_adc_samples)."""
        return C * self.sample_rate_ksps * 1e3 / (2 * self.slope_mhz_us * 1e12 * self.num_range_bins)

    @property
    def max_range_m(self) -> float:
        """IF-bandwidth limit c·Fs/(2S) for complex sampling (half for real sampling); TI tools quote 80-90 %."""
        r = C * self.sample_rate_ksps * 1e3 / (2 * self.slope_mhz_us * 1e12)
        return r if self.complex_adc else r / 2

    @property
    def chirp_interval_us(self) -> float:
        return self.idle_us + self.ramp_end_us

    @property
    def center_freq_hz(self) -> float:
        # SDK: fc = startFreq + adcStart·S + B/2
        return self.start_freq_ghz * 1e9 + self.adc_start_us * self.slope_mhz_us * 1e6 + self.bandwidth_hz / 2

    @property
    def wavelength_m(self) -> float:
        return C / self.center_freq_hz

    @property
    def max_velocity_mps(self) -> float:
        return self.wavelength_m / (4 * self.chirp_interval_us * 1e-6 * self.num_tx)

    @property
    def velocity_resolution_mps(self) -> float:
        return self.wavelength_m / (2 * self.chirp_interval_us * 1e-6 * self.num_doppler_bins * self.num_tx)

    @property
    def bytes_per_frame_raw(self) -> int:
        return self.num_adc_samples * self.num_rx * self.chirps_per_frame * (4 if self.complex_adc else 2)

    def derived(self) -> dict:
        names = ["num_virtual", "num_virtual_azimuth", "num_range_bins", "num_doppler_chirps", "num_doppler_bins",
                 "bandwidth_hz", "range_resolution_m", "range_step_m", "max_range_m", "chirp_interval_us",
                 "center_freq_hz", "wavelength_m", "max_velocity_mps", "velocity_resolution_mps",
                 "bytes_per_frame_raw"]
        return {n: getattr(self, n) for n in names}


@dataclass
class RadarCfg:
    source: str
    lines: list[CfgLine]
    sdk: tuple[int, int]
    profile: ChirpProfile
    gui_monitor: dict
    warnings: list[str] = field(default_factory=list)

    @property
    def commands(self) -> list[str]:
        """The lines sent to the device (comments and blank lines dropped)."""
        return [ln.text for ln in self.lines]

    @property
    def static_clutter_removal(self) -> bool:
        """`clutterRemoval <subFrameIdx> 1`: the SDK subtracts each range bin's mean over the frame's chirps
        (per antenna) before angle processing, so what stands still drops out of the maps."""
        cl = [ln.args for ln in self.lines if ln.command == "clutterRemoval"]
        return bool(cl) and len(cl[-1]) >= 2 and cl[-1][1] == "1"

    @property
    def digest(self) -> str:
        return hashlib.sha256("\n".join(self.commands).encode()).hexdigest()[:16]

    def text(self) -> str:
        return "\n".join(self.commands) + "\n"

    def to_dict(self) -> dict:
        return {"source": self.source, "sdk": "%d.%d" % self.sdk, "digest": self.digest,
                "profile": asdict(self.profile), "derived": self.profile.derived(),
                "gui_monitor": self.gui_monitor, "commands": len(self.lines), "warnings": self.warnings}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


_SDK_RE = re.compile(r"SDK\s*ver\s*:\s*(\d+)\.(\d+)", re.I)


def _num(tok: str, ln: CfgLine, src: str) -> float:
    try:
        return float(tok)
    except ValueError:
        raise CfgError(f"{src}:{ln.lineno}: {ln.text!r}: expected a number, got {tok!r}") from None


def parse_cfg(text_or_path: str | Path, *, sdk: tuple[int, int] | None = None) -> RadarCfg:
    """Parse a TI .cfg (text, or a path to one). `sdk` = firmware SDK (major, minor); default: the
    `% Created for SDK ver:` comment, else 3.5 (what the emulator runs)."""
    if isinstance(text_or_path, Path) or ("\n" not in str(text_or_path) and str(text_or_path).endswith(".cfg")):
        path = Path(text_or_path)
        try:
            text, src = path.read_text(errors="replace"), str(path)
        except OSError as e:
            raise CfgError(f"{path}: cannot read: {e.strerror}") from None
    else:
        text, src = str(text_or_path), "<cfg>"
    lines: list[CfgLine] = []
    for i, raw in enumerate(text.splitlines(), 1):
        s = raw.strip()
        if sdk is None and s.startswith("%"):
            m = _SDK_RE.search(s)
            if m:
                sdk = (int(m.group(1)), int(m.group(2)))
        if not s or s.startswith("%"):
            continue
        tok = s.split()
        lines.append(CfgLine(i, s, tok[0], tok[1:]))
    sdk = sdk or (3, 5)
    table = ARGC_SDK3 if sdk[0] >= 3 else ARGC_SDK2
    warnings = []
    for ln in lines:
        if len(ln.text) > 255:
            raise CfgError(f"{src}:{ln.lineno}: line is {len(ln.text)} chars; the demo CLI reads at most 255")
        if ln.command not in table:
            warnings.append(f"{src}:{ln.lineno}: unknown command {ln.command!r} for SDK {sdk[0]}.{sdk[1]} "
                            "(sent anyway; the device decides)")
            continue
        want = table[ln.command]
        if want is not None and len(ln.args) + 1 not in want:
            exp = " or ".join(str(n - 1) for n in sorted(want))
            raise CfgError(f"{src}:{ln.lineno}: {ln.text!r}: {ln.command} takes {exp} arguments on SDK "
                           f"{sdk[0]}.{sdk[1]}, got {len(ln.args)}")
    if any(ln.command == "advFrameCfg" for ln in lines):
        ln = next(ln for ln in lines if ln.command == "advFrameCfg")
        raise CfgError(f"{src}:{ln.lineno}: advanced frame mode (advFrameCfg) is not supported by radvis")
    starts = [ln for ln in lines if ln.command == "sensorStart"]
    end = starts[0].lineno if starts else 1 << 30
    seen = {}
    for ln in lines:
        if ln.lineno < end:
            seen.setdefault(ln.command, []).append(ln)
    missing = [c for c in REQUIRED_FRAME if c not in seen]
    if sdk >= (3, 5):
        missing += [c for c in REQUIRED_SDK35 if c not in seen]
        for c in ("cfarCfg", "cfarFovCfg"):  # both processing directions (range 0, Doppler 1)
            if c in seen and len({ln.args[1] for ln in seen[c] if len(ln.args) > 1}) < 2:
                missing.append(f"{c} (both directions 0 and 1)")
    if missing:
        where = f"{src}:{starts[0].lineno}: {starts[0].text!r}" if starts else f"{src}: (end of file)"
        raise CfgError(f"{where}: SDK {sdk[0]}.{sdk[1]} requires these commands before sensorStart: "
                       + ", ".join(missing))
    profile, gui = _derive(lines, src, sdk)
    lvds = [ln.args for ln in lines if ln.command == "lvdsStreamCfg"]
    if lvds and len(lvds[-1]) >= 3 and lvds[-1][2] != "0":  # raw ADC over LVDS: a DCA1000 packetises it
        from drivers.ti.dca1000_packets import packet_warning
        w = packet_warning(profile, src)
        if w:
            warnings.append(w)
    return RadarCfg(src, lines, sdk, profile, gui, warnings)


def _last(lines: list[CfgLine], cmd: str) -> CfgLine:
    return [ln for ln in lines if ln.command == cmd][-1]


def _derive(lines: list[CfgLine], src: str, sdk) -> tuple[ChirpProfile, dict]:
    ch = _last(lines, "channelCfg")
    rx_mask, tx_mask = int(_num(ch.args[0], ch, src)), int(_num(ch.args[1], ch, src))
    adc = _last(lines, "adcCfg")
    complex_adc = int(_num(adc.args[1], adc, src)) != 0
    fr = _last(lines, "frameCfg")
    c0, c1, loops = (int(_num(a, fr, src)) for a in fr.args[:3])
    period = _num(fr.args[4], fr, src)
    if c1 < c0 or loops < 1 or period <= 0:
        raise CfgError(f"{src}:{fr.lineno}: {fr.text!r}: need chirpEndIdx >= chirpStartIdx, numLoops >= 1, "
                       "framePeriodicity > 0")
    chirps = {}
    for ln in lines:
        if ln.command == "chirpCfg":
            a, b, pid = (int(_num(x, ln, src)) for x in ln.args[:3])
            for k in range(a, b + 1):
                chirps[k] = (pid, int(_num(ln.args[7], ln, src)), ln)
    tx_order, profile_ids = [], set()
    for k in range(c0, c1 + 1):
        if k not in chirps:
            raise CfgError(f"{src}:{fr.lineno}: {fr.text!r}: chirp {k} is used by the frame but no chirpCfg defines it")
        pid, txen, ln = chirps[k]
        if txen & ~tx_mask:
            raise CfgError(f"{src}:{ln.lineno}: {ln.text!r}: txEnable {txen} uses a TX not enabled by channelCfg "
                           f"(tx mask {tx_mask})")
        tx_order.append(txen.bit_length() - 1 if txen and txen & (txen - 1) == 0 else -1)
        profile_ids.add(pid)
    tx_union = 0
    for k in range(c0, c1 + 1):
        tx_union |= chirps[k][1]
    profs = {int(_num(ln.args[0], ln, src)): ln for ln in lines if ln.command == "profileCfg"}
    pid = min(profile_ids)
    if pid not in profs:
        raise CfgError(f"{src}:{fr.lineno}: frame uses profile {pid} but no profileCfg defines it")
    p = profs[pid]
    v = [_num(a, p, src) for a in p.args]
    prof = ChirpProfile(
        start_freq_ghz=v[1], idle_us=v[2], adc_start_us=v[3], ramp_end_us=v[4], slope_mhz_us=v[7],
        num_adc_samples=int(v[9]), sample_rate_ksps=v[10], num_tx=bin(tx_union).count("1"),
        num_rx=bin(rx_mask).count("1"), num_loops=loops, chirps_per_frame=(c1 - c0 + 1) * loops,
        frame_period_ms=period, complex_adc=complex_adc, tx_order=tx_order, rx_mask=rx_mask, tx_mask=tx_mask)
    if prof.num_adc_samples < 1 or prof.sample_rate_ksps <= 0 or prof.slope_mhz_us <= 0:
        raise CfgError(f"{src}:{p.lineno}: {p.text!r}: numAdcSamples, digOutSampleRate and freqSlopeConst must be > 0")
    if prof.adc_start_us + prof.num_adc_samples / (prof.sample_rate_ksps * 1e-3) > prof.ramp_end_us:
        raise CfgError(f"{src}:{p.lineno}: {p.text!r}: sampling ({prof.num_adc_samples} samples at "
                       f"{prof.sample_rate_ksps} ksps from {prof.adc_start_us} us) ends after rampEndTime "
                       f"{prof.ramp_end_us} us")
    if prof.num_rx == 0 or prof.num_tx == 0:
        raise CfgError(f"{src}:{ch.lineno}: {ch.text!r}: no RX or no TX enabled")
    gui = {}
    g = [ln for ln in lines if ln.command == "guiMonitor"]
    if g:
        vals = [int(_num(a, g[-1], src)) for a in g[-1].args]
        if len(vals) == 6:  # xWR14xx: no subFrameIdx
            vals = [-1] + vals
        keys = ["subframe", "detected_objects", "log_mag_range", "noise_profile", "range_azimuth_heatmap",
                "range_doppler_heatmap", "stats"]
        gui = dict(zip(keys, vals))
    return prof, gui
