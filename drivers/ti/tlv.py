"""TLV payload decoders of the TI mmWave OOB demo's data port (SDK35 `mmw_output.h`; reference §1.3).

Each decoder takes the payload bytes (a memoryview into the packet, possibly unaligned), the header's
point count and shape hints ({"num_range_bins", "velocity_step"} from the cfg) and returns a dict
of numpy arrays / numbers with units in the key names. Arrays are views or small copies; a bad length
raises TlvError(reason) so the parser can reject the whole packet and count why.
"""
from __future__ import annotations

import struct

import numpy as np

DETECTED_POINTS, RANGE_PROFILE, NOISE_PROFILE, AZIMUTH_STATIC_HEATMAP = 1, 2, 3, 4
RANGE_DOPPLER_HEATMAP, STATS, SIDE_INFO, AZIMUTH_ELEVATION_HEATMAP, TEMPERATURE = 5, 6, 7, 8, 9
NAMES = {1: "detected_points", 2: "range_profile", 3: "noise_profile", 4: "azimuth_static_heatmap",
         5: "range_doppler_heatmap", 6: "stats", 7: "side_info", 8: "azimuth_elevation_heatmap", 9: "temperature"}

# What the numbers mean (copied into radar messages' meta["units"]).
UNITS = {
    "points": "float32 (N,4) x, y, z in m (x right, y boresight, z up), radial velocity in m/s (+ = away)",
    "range_profile": "log2 magnitude (device Q9 u16 / 512), zero-Doppler detection-matrix column",
    "noise_profile": "log2 magnitude (device Q9 u16 / 512), at Doppler bin numDopplerBins/2-1",
    "azimuth_heatmap": "complex int16 range FFT at zero Doppler, [range bin, virtual antenna]",
    "range_doppler": "log2 magnitude (Q9 u16 / 512), [range bin, Doppler bin] as sent (not fftshifted)",
    "side_info": "float32 (N,2) snr, noise in dB",
    "ra": "float32 (128,128,2) real, imag of the range-azimuth spectrum on the ROD2021 grid",
    "ra_chirps": "float32 (128,128,2C) the ra map of each chirp in meta ra_chirps: real, imag of chirp 0, then 1, ...",
}

STATS_FIELDS = ("inter_frame_processing_time_us", "transmit_output_time_us", "inter_frame_processing_margin_us",
                "inter_chirp_processing_margin_us", "active_frame_cpu_load_pct", "inter_frame_cpu_load_pct")
TEMP_FIELDS = ("rx0", "rx1", "rx2", "rx3", "tx0", "tx1", "tx2", "pm", "dig0", "dig1")
_STATS = struct.Struct("<6I")
_TEMP = struct.Struct("<iI10h")
_QDESC = struct.Struct("<HH")
_Q9, _DB10 = np.float32(1 / 512), np.float32(0.1)   # float32 scalars: u2/i2 * f4 -> f4 arrays
_Q_POINT = np.dtype([("range_idx", "<u2"), ("doppler_idx", "<i2"), ("peak", "<u2"),
                     ("x", "<i2"), ("y", "<i2"), ("z", "<i2")])


class TlvError(ValueError):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def points_float(p, n_obj: int, hints: dict) -> dict:
    """SDK 3.x: N × float32 x, y, z, velocity."""
    if len(p) != 16 * n_obj:
        raise TlvError("point_count", f"TLV 1 has {len(p)} B, header says {n_obj} points ({16 * n_obj} B)")
    return {"points": np.frombuffer(p, "<f4").reshape(-1, 4)}


def points_q(p, n_obj: int, hints: dict) -> dict:
    """SDK 1.x/2.x: u16 numObj, u16 xyzQFormat, then N × (u16 rangeIdx, i16 dopplerIdx, u16 peak, i16 x, y, z)."""
    if len(p) < 4:
        raise TlvError("point_count", f"TLV 1 has {len(p)} B, shorter than its 4-B descriptor")
    n, q = _QDESC.unpack_from(p, 0)
    if len(p) != 4 + 12 * n or n != n_obj or q > 15:
        raise TlvError("point_count", f"TLV 1 descriptor says {n} points Q{q} in {len(p)} B, header says {n_obj}")
    a = np.frombuffer(p, _Q_POINT, offset=4)
    pts = np.empty((n, 4), np.float32)
    s = 1.0 / (1 << q)
    pts[:, 0], pts[:, 1], pts[:, 2] = a["x"] * s, a["y"] * s, a["z"] * s
    step = hints.get("velocity_step")
    pts[:, 3] = a["doppler_idx"] * step if step else np.nan
    return {"points": pts, "q_format": q, "range_idx": a["range_idx"].copy(),
            "doppler_idx": a["doppler_idx"].copy(), "peak": a["peak"].copy()}


def log_profile(p, n_obj: int = 0, hints: dict | None = None) -> dict:
    if len(p) % 2:
        raise TlvError("tlv_length", f"log-magnitude profile of odd length {len(p)}")
    raw = np.frombuffer(p, "<u2")
    return {"raw_q9": raw, "log2_mag": raw * _Q9}


def complex_heatmap(p, n_obj: int = 0, hints: dict | None = None) -> dict:
    """cmplx16ImRe_t: i16 imag first, then i16 real; range-major [range bin][antenna]."""
    if len(p) % 4:
        raise TlvError("tlv_length", f"complex heatmap length {len(p)} is not a multiple of 4")
    w = np.frombuffer(p, "<i2").reshape(-1, 2)
    z = (w[:, 1] + 1j * w[:, 0]).astype(np.complex64)
    num_range_bins = hints.get("num_range_bins") if hints else None
    if num_range_bins and z.size % num_range_bins == 0:
        z = z.reshape(num_range_bins, -1)
    return {"heatmap": z}


def range_doppler(p, n_obj: int = 0, hints: dict | None = None) -> dict:
    if len(p) % 2:
        raise TlvError("tlv_length", f"range-Doppler heatmap of odd length {len(p)}")
    raw = np.frombuffer(p, "<u2")
    num_range_bins = hints.get("num_range_bins") if hints else None
    if num_range_bins and raw.size % num_range_bins == 0:
        raw = raw.reshape(num_range_bins, -1)
    return {"raw_q9": raw, "log2_mag": raw * _Q9}


def stats(p, n_obj: int = 0, hints: dict | None = None) -> dict:
    if len(p) != 24:
        raise TlvError("tlv_length", f"stats TLV is {len(p)} B, expected 24")
    return dict(zip(STATS_FIELDS, _STATS.unpack_from(p, 0)))


def side_info(p, n_obj: int, hints: dict | None = None) -> dict:
    if len(p) != 4 * n_obj:
        raise TlvError("point_count", f"side-info TLV has {len(p)} B for {n_obj} points")
    raw = np.frombuffer(p, "<i2").reshape(-1, 2)
    return {"snr_noise_db": raw * _DB10}


def temperature(p, n_obj: int = 0, hints: dict | None = None) -> dict:
    if len(p) != 28:
        raise TlvError("tlv_length", f"temperature TLV is {len(p)} B, expected 28")
    v = _TEMP.unpack_from(p, 0)
    return {"report_valid": v[0] == 0, "time_ms": v[1], "temp_c": dict(zip(TEMP_FIELDS, v[2:]))}


_DEC3 = {1: points_float, 2: log_profile, 3: log_profile, 4: complex_heatmap, 5: range_doppler, 6: stats,
         7: side_info, 8: complex_heatmap, 9: temperature}
_DEC2 = {1: points_q, 2: log_profile, 3: log_profile, 4: complex_heatmap, 5: range_doppler, 6: stats}


def decoders(sdk_major: int) -> dict:
    """type -> decoder for this SDK generation (types 7-9 exist only on SDK 3.x)."""
    return _DEC3 if sdk_major >= 3 else _DEC2


_FIXED = {6: 24, 9: 28}
MULT = _MULT = {2: 2, 3: 2, 4: 4, 5: 2, 8: 4}   # element size of variable-length TLVs


def check(t: int, buf, o: int, ln: int, n_obj: int, sdk_major: int) -> None:
    """Cheap length validation of the TLV payload buf[o:o+ln], done for every packet (decoding into
    arrays happens on access)."""
    if t == 1:
        if sdk_major >= 3:
            if ln != 16 * n_obj:
                raise TlvError("point_count", f"TLV 1 has {ln} B, header says {n_obj} points")
        else:
            if ln < 4:
                raise TlvError("point_count", f"TLV 1 has {ln} B, shorter than its descriptor")
            n, q = _QDESC.unpack_from(buf, o)
            if ln != 4 + 12 * n or n != n_obj or q > 15:
                raise TlvError("point_count", f"TLV 1 descriptor says {n} points Q{q} in {ln} B, header {n_obj}")
    elif t == 7 and sdk_major >= 3:
        if ln != 4 * n_obj:
            raise TlvError("point_count", f"side-info TLV has {ln} B for {n_obj} points")
    elif t in _FIXED and (sdk_major >= 3 or t == 6):
        if ln != _FIXED[t]:
            raise TlvError("tlv_length", f"TLV {t} is {ln} B, expected {_FIXED[t]}")
    elif t in _MULT and ln % _MULT[t]:
        raise TlvError("tlv_length", f"TLV {t} length {ln} is not a multiple of {_MULT[t]}")


def to_jsonable(v):
    """Decoded TLV values as JSON (complex as [re, im], arrays as lists, NaN as null)."""
    if isinstance(v, dict):
        return {k: to_jsonable(x) for k, x in v.items()}
    if isinstance(v, np.ndarray):
        if np.iscomplexobj(v):
            return to_jsonable(np.stack([v.real, v.imag], -1))
        if v.dtype.kind == "f":
            return [to_jsonable(x) for x in v] if v.ndim > 1 else \
                [None if not np.isfinite(x) else round(float(x), 6) for x in v]
        return v.tolist()
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return None if not np.isfinite(v) else round(float(v), 6)
    return v
