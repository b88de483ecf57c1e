"""Streaming parser of the TI mmWave demo's data port (UART TLV packets, reference §1.2-1.6).

Bytes may arrive in any chunking: `UartParser.feed(chunk)` returns the packets completed by it.
Synchronisation is by validation, never by 32-byte alignment: a magic word is only accepted when its
header is plausible (version, platform, length multiple of 32 and bounded, TLV count), the TLV walk fits
the packet with < 32 bytes of padding, and every TLV payload has the size its type demands. A corrupt
length can therefore not swallow good packets: if another valid magic lies inside a candidate packet and
the bytes right after the candidate are not a magic word, the candidate is rejected and the parser
resynchronises on the inner magic. Pad bytes are ignored (they are uninitialised memory on real devices).

Counters (`.stats`): frames decoded, bytes skipped, rejected by reason, frames lost (frame-number gaps,
net of late arrivals), duplicates, reordered.
"""
from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass, field

from drivers.ti import tlv as tlvmod

MAGIC = b"\x02\x01\x04\x03\x06\x05\x08\x07"
PLATFORMS = {0xA1243, 0xA1443, 0xA1642, 0xA1843, 0xA2944, 0xA6443, 0xA6843}
MAX_PACKET = 64 * 1024
MAX_TLVS = 32
_HDR = struct.Struct("<8x8I")      # version, totalPacketLen, platform, frameNumber, timeCpuCycles, numDetObj, numTLVs, subFrame
_TL = struct.Struct("<2I")


@dataclass(slots=True)
class UartFrame:
    version: int
    total_packet_len: int
    platform: int
    frame_number: int
    time_cpu_cycles: int
    num_detected_obj: int
    num_tlvs: int
    subframe_number: int
    header_len: int
    offset: int                      # byte offset of the magic word in the stream
    tlv_types: list = field(default_factory=list)
    spans: dict = field(default_factory=dict)  # type -> (payload offset in raw, length)
    raw: memoryview | None = None              # the packet's bytes (owned copy)
    hints: dict = field(default_factory=dict)  # shapes from the cfg (range bins, Doppler step)
    _decoded: dict | None = None

    @property
    def tlvs(self) -> dict:
        """type -> decoded dict (numpy views of the packet bytes), decoded on first access."""
        if self._decoded is None:
            dec, raw, nobj, spans = tlvmod.decoders(self.version >> 24), self.raw, self.num_detected_obj, self.spans
            hints = self.hints
            if "num_range_bins" not in hints:   # no cfg: the range profile's length gives the range bins
                s = spans.get(2) or spans.get(3)
                if s:
                    hints = {"num_range_bins": s[1] // 2}
            out = {}
            for t, (o, ln) in spans.items():
                f = dec.get(t)
                if f is not None:
                    out[t] = f(raw[o:o + ln], nobj, hints)
            self._decoded = out
        return self._decoded

    @property
    def sdk(self) -> str:
        v = self.version
        return f"{v >> 24}.{(v >> 16) & 0xFF}.{(v >> 8) & 0xFF}.{v & 0xFF}"

    @property
    def points(self):
        d = self.tlvs.get(1)
        return d["points"] if d else None

    def header_dict(self) -> dict:
        return {"frame_number": self.frame_number, "version": f"0x{self.version:08X}", "sdk": self.sdk,
                "platform": f"0x{self.platform:X}", "total_packet_len": self.total_packet_len,
                "time_cpu_cycles": self.time_cpu_cycles, "num_detected_obj": self.num_detected_obj,
                "num_tlvs": self.num_tlvs, "subframe_number": self.subframe_number, "header_len": self.header_len,
                "offset": self.offset}

    def to_json(self) -> dict:
        d = self.header_dict()
        d["tlvs"] = [{"type": t, "name": tlvmod.NAMES.get(t, "unknown"),
                      "value": tlvmod.to_jsonable(self.tlvs.get(t))} for t in self.tlv_types]
        return d


@dataclass
class UartStats:
    frames: int = 0
    bytes_in: int = 0
    bytes_skipped: int = 0
    rejected: Counter = field(default_factory=Counter)
    lost: int = 0
    duplicates: int = 0
    reordered: int = 0
    unknown_tlvs: int = 0

    def to_dict(self) -> dict:
        return {"frames": self.frames, "bytes_in": self.bytes_in, "bytes_skipped": self.bytes_skipped,
                "rejected": dict(self.rejected), "lost": self.lost, "duplicates": self.duplicates,
                "reordered": self.reordered, "unknown_tlvs": self.unknown_tlvs}


class UartParser:
    """Incremental TLV packet parser. `profile` (a ChirpProfile, optional) gives heatmap shapes and the
    Doppler step for SDK-2 Q-format points; without it, shapes come from the packet itself."""

    NEED = object()

    def __init__(self, profile=None, max_packet: int = MAX_PACKET):
        self.profile = profile
        self.max_packet = max_packet
        self.buf = bytearray()
        self.pos = 0               # start of unparsed bytes in buf
        self.base = 0              # stream offset of buf[0]
        self.stats = UartStats()
        self._last_fn = None
        self._missing: set[int] = set()
        self._walked = None        # (stream offset, validation) of a candidate waiting for its last bytes
        self._hints = {}
        if profile is not None:
            self._hints = {"num_range_bins": profile.num_range_bins, "velocity_step": profile.velocity_resolution_mps}

    # -- public --------------------------------------------------------------------------------
    def feed(self, data) -> list[UartFrame]:
        self.stats.bytes_in += len(data)
        if self.pos and self.pos > len(self.buf) // 2:     # compact: keep the buffer bounded
            del self.buf[:self.pos]
            self.base += self.pos
            self.pos = 0
        self.buf += data
        return self._parse(final=False)

    def flush(self) -> list[UartFrame]:
        """End of stream: decide what is left (a truncated final packet is counted, not waited for)."""
        out = self._parse(final=True)
        rest = len(self.buf) - self.pos
        if rest:
            self.stats.bytes_skipped += rest
            self.pos = len(self.buf)
        return out

    def parse_all(self, data) -> list[UartFrame]:
        return self.feed(data) + self.flush()

    # -- internals -----------------------------------------------------------------------------
    def _parse(self, final: bool) -> list[UartFrame]:
        out, buf = [], self.buf
        while True:
            i = buf.find(MAGIC, self.pos)
            if i < 0:
                # keep the last 7 bytes: they may be the start of a magic word split across chunks
                keep = len(buf) - self.pos if final else min(len(buf) - self.pos, len(MAGIC) - 1)
                skip = len(buf) - self.pos - (0 if final else keep)
                self.stats.bytes_skipped += skip
                self.pos += skip
                return out
            if i > self.pos:
                self.stats.bytes_skipped += i - self.pos
                self.pos = i
            r = self._try(i, final)
            if r is self.NEED:
                if final:
                    self.stats.rejected["truncated"] += 1
                    self.stats.bytes_skipped += 1
                    self.pos = i + 1
                    continue
                return out
            if isinstance(r, str):          # rejected: drop this magic's first byte and search again
                self.stats.rejected[r] += 1
                self.stats.bytes_skipped += 1
                self.pos = i + 1
                continue
            self.pos = i + r.total_packet_len
            self._account(r)
            out.append(r)

    def _header_ok(self, j: int):
        """Plausibility of the header at buf[j] (enough bytes assumed). Returns (fields, header_len) or reason."""
        version, total, platform, fn, cyc, nobj, ntlv, sub = _HDR.unpack_from(self.buf, j)
        major = version >> 24
        if not 1 <= major <= 3:
            return "version"
        if platform not in PLATFORMS:
            return "platform"
        hl = 36 if platform == 0xA1443 and major < 3 else 40
        if total % 32 or total < hl or total > self.max_packet:
            return "packet_len"
        if ntlv > MAX_TLVS:
            return "num_tlvs"
        return (version, total, platform, fn, cyc, nobj, ntlv, sub if hl == 40 else 0), hl

    def _validate(self, i: int):
        """Header + TLV walk + TLV sizes of the candidate at buf[i]: (fields, header_len, types, spans) |
        reason | NEED."""
        buf = self.buf
        n = len(buf)
        if n - i < 40:
            return self.NEED
        w = self._walked
        if w is not None and w[0] == self.base + i:      # walked already, was only waiting for its bytes
            return w[1] if n >= i + w[1][0][1] else self.NEED
        h = self._header_ok(i)
        if h.__class__ is str:
            return h
        fields, hl = h
        total, nobj, ntlv, major = fields[1], fields[5], fields[6], fields[0] >> 24
        # TLV walk: done as soon as the TL headers are present so a bad length is rejected early
        off, end, types, spans = i + hl, i + total, [], {}
        unpack, names, check, mult = _TL.unpack_from, tlvmod.NAMES, tlvmod.check, tlvmod.MULT
        try:
            for _ in range(ntlv):
                o8 = off + 8
                if o8 > end:
                    return "tlv_overrun"
                if o8 > n:
                    return self.NEED
                t, ln = unpack(buf, off)
                off = o8 + ln
                if off > end:
                    return "tlv_overrun"
                if t in names:
                    m = mult.get(t)
                    if m is not None:           # heatmaps/profiles: any multiple of the element size
                        if ln % m:
                            return "tlv_length"
                    else:                       # points, side info, stats, temperature: exact sizes
                        if t == 1 and major < 3 and o8 + 4 > n:
                            return self.NEED
                        check(t, buf, o8, ln, nobj, major)
                    spans[t] = (o8 - i, ln)
                types.append(t)
        except tlvmod.TlvError as e:
            return e.reason
        if end - off >= 32:
            return "padding"
        if n < end:
            self._walked = (self.base + i, (fields, hl, types, spans))
            return self.NEED
        return fields, hl, types, spans

    def _inner_wins(self, i: int, end: int, final: bool):
        """Is there a packet starting inside [i+8, end) that is valid and followed by a magic word (or by
        the end of the data)? Then the candidate at i has a corrupt length. True | False | NEED."""
        buf, n = self.buf, len(self.buf)
        j = buf.find(MAGIC, i + 8, end + 7)
        while j >= 0:
            v = self._validate(j)
            if v is self.NEED:
                if not final:
                    return self.NEED
            elif not isinstance(v, str):
                e2 = j + v[0][1]
                if n < e2 + 8 or buf[e2:e2 + 8] == MAGIC:
                    return True
            j = buf.find(MAGIC, j + 1, end + 7)
        return False

    def _try(self, i: int, final: bool):
        v = self._validate(i)
        if v is self.NEED or v.__class__ is str:
            return v
        (version, total, platform, fn, cyc, nobj, ntlv, sub), hl, types, spans = v
        buf, end = self.buf, i + total
        # a magic right after the candidate confirms its length; otherwise make sure no valid packet
        # starts inside it (a corrupt length must not swallow good packets; a magic starting up to 7
        # bytes before `end` still overlaps the candidate)
        if buf[end:end + 8] != MAGIC and buf.find(MAGIC, i + 8, end + 7) >= 0:
            w = self._inner_wins(i, end, final)
            if w is self.NEED:
                return self.NEED
            if w:
                return "overlaps_next"
        if len(spans) < len(types):
            self.stats.unknown_tlvs += sum(1 for t in types if t not in tlvmod.NAMES)   # skipped by length
        # the frame owns a copy of its bytes; decoded arrays are views of it
        return UartFrame(version, total, platform, fn, cyc, nobj, ntlv, sub, hl, self.base + i,
                         types, spans, memoryview(bytes(buf[i:end])), self._hints)

    def _account(self, f: UartFrame) -> None:
        self.stats.frames += 1
        last, fn = self._last_fn, f.frame_number
        if last is None or fn == (last + 1) & 0xFFFFFFFF:
            self._last_fn = fn
        elif fn > last:
            gap = fn - last - 1
            self.stats.lost += gap
            if gap <= 4096:
                self._missing.update(range(last + 1, fn))
            self._last_fn = fn
        elif fn in self._missing:
            self._missing.discard(fn)
            self.stats.lost -= 1
            self.stats.reordered += 1
        else:
            self.stats.duplicates += 1
        if len(self._missing) > 8192:
            self._missing = set(sorted(self._missing)[-4096:])


def parse_bytes(data: bytes, profile=None) -> tuple[list[UartFrame], UartStats]:
    p = UartParser(profile)
    frames = p.parse_all(data)
    return frames, p.stats
