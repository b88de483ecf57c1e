"""Offline DCA1000 captures: Wireshark/tcpdump pcap or pcapng of the Ethernet link, and .bin files.

pcap: UDP datagrams to the data port go through the same `FrameAssembler` as live traffic (so loss,
duplicates and reordering in a capture are handled identically); datagrams on the config port are decoded
as command requests (sent from the host's config port) or FPGA replies/async status (anything else).
Lengths come from the IP/UDP headers, never from the captured frame length: Ethernet pads short frames
(every 8-byte reply in the fixtures is padded to 60 bytes).

.bin: `raw` is the payload stream the TI CLI/mmWave Studio writes (`*_Raw_0.bin`, `adc_data.bin`);
`records` is the DLL's post-processing format, each packet stored as `u32 seq | u32 size | u48 byteCount |
payload`.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from drivers.ti.dca1000 import CONFIG_PORT, DATA_PORT, DcaError, Reply, cmd_name, decode_command, decode_reply
from drivers.ti.dca1000_receiver import FrameAssembler, RawFrame

PCAP_MAGICS = {  # magic as read little-endian → (byte order, timestamp units per second)
    0xA1B2C3D4: ("<", 1_000_000), 0xD4C3B2A1: (">", 1_000_000),
    0xA1B23C4D: ("<", 1_000_000_000), 0x4D3CB2A1: (">", 1_000_000_000),
}
PCAPNG_SHB = 0x0A0D0D0A


class CaptureError(ValueError):
    """The file is not a readable pcap/pcapng/bin capture."""


@dataclass
class Datagram:
    t_ns: int
    src: str
    sport: int
    dst: str
    dport: int
    payload: bytes


@dataclass
class PcapStats:
    records: int = 0
    udp: int = 0
    not_udp: int = 0        # other link/network/transport protocols: skipped
    truncated: int = 0      # captured shorter than the IP/UDP lengths say: skipped
    fragments: int = 0      # IPv4 fragments: skipped (DCA datagrams are never fragmented)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _ip(b: bytes) -> str:
    return ".".join(str(x) for x in b)


def _decode_link(linktype: int, pkt: bytes, st: PcapStats) -> tuple[bytes, int] | None:
    """Strip the link header; return (network bytes, ethertype) or None."""
    if linktype == 1:                                    # Ethernet (+ 802.1Q tags)
        if len(pkt) < 14:
            st.truncated += 1
            return None
        off, etype = 14, struct.unpack_from(">H", pkt, 12)[0]
        while etype in (0x8100, 0x88A8) and len(pkt) >= off + 4:
            etype = struct.unpack_from(">H", pkt, off + 2)[0]
            off += 4
        return pkt[off:], etype
    if linktype in (12, 101, 228):                       # raw IP
        return pkt, 0x0800
    if linktype == 113 and len(pkt) >= 16:               # Linux cooked v1
        return pkt[16:], struct.unpack_from(">H", pkt, 14)[0]
    if linktype == 276 and len(pkt) >= 20:               # Linux cooked v2
        return pkt[20:], struct.unpack_from(">H", pkt, 0)[0]
    if linktype == 0 and len(pkt) >= 4:                  # BSD loopback
        fam = struct.unpack_from("<I", pkt, 0)[0]
        return pkt[4:], 0x0800 if fam == 2 else 0
    st.not_udp += 1
    return None


def _decode_udp(linktype: int, t_ns: int, pkt: bytes, st: PcapStats) -> Datagram | None:
    link = _decode_link(linktype, pkt, st)
    if link is None:
        return None
    ip, etype = link
    if etype != 0x0800 or len(ip) < 20 or ip[0] >> 4 != 4:
        st.not_udp += 1
        return None
    ihl = (ip[0] & 0x0F) * 4
    total = struct.unpack_from(">H", ip, 2)[0]
    frag = struct.unpack_from(">H", ip, 6)[0]
    if ip[9] != 17:
        st.not_udp += 1
        return None
    if frag & 0x3FFF:
        st.fragments += 1
        return None
    if total > len(ip) or total < ihl + 8:
        st.truncated += 1
        return None
    sport, dport, ulen = struct.unpack_from(">HHH", ip, ihl)
    if ulen < 8 or ihl + ulen > total:
        st.truncated += 1
        return None
    st.udp += 1
    return Datagram(t_ns, _ip(ip[12:16]), sport, _ip(ip[16:20]), dport, bytes(ip[ihl + 8:ihl + ulen]))


def read_pcap(path: str | Path, stats: PcapStats | None = None) -> Iterator[Datagram]:
    """UDP/IPv4 datagrams of a pcap or pcapng file, in file order."""
    st = stats if stats is not None else PcapStats()
    data = Path(path).read_bytes()
    if len(data) < 24:
        raise CaptureError(f"{path}: {len(data)} bytes, too short for a pcap header")
    magic = struct.unpack_from("<I", data, 0)[0]
    if magic == PCAPNG_SHB:
        yield from _read_pcapng(path, data, st)
        return
    if magic not in PCAP_MAGICS:
        raise CaptureError(f"{path}: not a pcap/pcapng file (magic 0x{magic:08X})")
    bo, units = PCAP_MAGICS[magic]
    linktype = struct.unpack_from(bo + "I", data, 20)[0] & 0x0FFFFFFF
    off = 24
    while off + 16 <= len(data):
        sec, frac, incl, _orig = struct.unpack_from(bo + "IIII", data, off)
        off += 16
        pkt = data[off:off + incl]
        off += incl
        st.records += 1
        if len(pkt) < incl:
            st.truncated += 1
            break
        d = _decode_udp(linktype, sec * 1_000_000_000 + frac * (1_000_000_000 // units), pkt, st)
        if d is not None:
            yield d


def _read_pcapng(path, data: bytes, st: PcapStats) -> Iterator[Datagram]:
    bo = "<"
    ifaces: list[tuple[int, int]] = []      # (linktype, ticks per second)
    off = 0
    while off + 12 <= len(data):
        btype = struct.unpack_from(bo + "I", data, off)[0]
        if btype == PCAPNG_SHB:
            bom = struct.unpack_from("<I", data, off + 8)[0]
            bo = "<" if bom == 0x1A2B3C4D else ">"
            ifaces = []
        blen = struct.unpack_from(bo + "I", data, off + 4)[0]
        if blen < 12 or off + blen > len(data):
            st.truncated += 1
            break
        body = data[off + 8:off + blen - 4]
        if btype == 1 and len(body) >= 8:                # interface description
            linktype = struct.unpack_from(bo + "H", body, 0)[0]
            tps, o = 1_000_000, 8
            while o + 4 <= len(body):                    # options: look for if_tsresol (9)
                code, olen = struct.unpack_from(bo + "HH", body, o)
                if code == 0:
                    break
                if code == 9 and olen >= 1:
                    r = body[o + 4]
                    tps = 2 ** (r & 0x7F) if r & 0x80 else 10 ** r
                o += 4 + (olen + 3) // 4 * 4
            ifaces.append((linktype, tps))
        elif btype == 6 and len(body) >= 20:             # enhanced packet
            iid, hi, lo, cap, _orig = struct.unpack_from(bo + "IIIII", body, 0)
            st.records += 1
            if iid < len(ifaces):
                linktype, tps = ifaces[iid]
                ticks = (hi << 32) | lo
                d = _decode_udp(linktype, ticks * 1_000_000_000 // tps, body[20:20 + cap], st)
                if d is not None:
                    yield d
        elif btype == 3 and len(body) >= 4 and ifaces:   # simple packet
            st.records += 1
            d = _decode_udp(ifaces[0][0], 0, body[4:], st)
            if d is not None:
                yield d
        off += blen


@dataclass
class CaptureEvent:
    """One item of a parsed capture, in file order: a frame, a command request, or a reply/status."""
    kind: str                       # "frame" | "request" | "reply" | "bad_control"
    t_ns: int = 0
    frame: RawFrame | None = None
    reply: Reply | None = None
    request: tuple[int, bytes] | None = None
    error: str = ""

    def to_dict(self) -> dict:
        d: dict = {"kind": self.kind, "t_ns": self.t_ns}
        if self.reply is not None:
            d.update(self.reply.to_dict())
        if self.request is not None:
            d.update({"cmd": self.request[0], "name": cmd_name(self.request[0]), "data": self.request[1].hex()})
        if self.error:
            d["error"] = self.error
        return d


@dataclass
class CaptureParser:
    """pcap → frames (through a FrameAssembler) and config-port traffic."""
    frame_bytes: int
    data_port: int = DATA_PORT
    config_port: int = CONFIG_PORT
    window_frames: int = 2
    pcap: PcapStats = field(default_factory=PcapStats)

    def __post_init__(self):
        self.asm = FrameAssembler(self.frame_bytes, self.window_frames)

    @property
    def stats(self):
        return self.asm.stats

    def events(self, path: str | Path) -> Iterator[CaptureEvent]:
        for d in read_pcap(path, self.pcap):
            if d.dport == self.data_port:
                self.asm.feed_datagram(memoryview(d.payload), len(d.payload), d.t_ns)
            elif self.config_port in (d.dport, d.sport):
                yield self._control(d)
            for f in self.asm.pop_ready():
                yield CaptureEvent("frame", f.t_last_ns, frame=f)
        self.asm.flush()
        for f in self.asm.pop_ready():
            yield CaptureEvent("frame", f.t_last_ns, frame=f)

    def _control(self, d: Datagram) -> CaptureEvent:
        try:
            if d.sport == self.config_port:          # host → FPGA: the host sends from its config port
                return CaptureEvent("request", d.t_ns, request=decode_command(d.payload))
            return CaptureEvent("reply", d.t_ns, reply=decode_reply(d.payload))
        except (ValueError, DcaError) as e:
            return CaptureEvent("bad_control", d.t_ns, error=str(e))


def read_bin(path: str | Path, frame_bytes: int, fmt: str = "raw") -> tuple[list[RawFrame], FrameAssembler]:
    """Frames of a .bin capture; a trailing partial frame is returned incomplete with its lost bytes."""
    data = Path(path).read_bytes()
    asm = FrameAssembler(frame_bytes)
    if fmt == "raw":
        for off in range(0, len(data), frame_bytes):
            chunk = data[off:off + frame_bytes]
            asm.feed(off // frame_bytes + 1, off, memoryview(chunk))
    elif fmt == "records":
        off = 0
        while off + 14 <= len(data):
            seq, size, lo, hi = struct.unpack_from("<IIIH", data, off)
            if off + 14 + size > len(data):
                asm.stats.malformed += 1
                break
            asm.feed(seq, lo | (hi << 32), memoryview(data)[off + 14:off + 14 + size])
            off += 14 + size
        if off != len(data):
            asm.stats.malformed += 1 if off + 14 > len(data) else 0
    else:
        raise CaptureError(f"bin format {fmt!r}, expected 'raw' or 'records'")
    asm.flush()
    return asm.pop_ready(), asm
