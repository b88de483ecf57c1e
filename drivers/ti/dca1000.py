"""DCA1000EVM configuration protocol (UDP port 4096) and its client.

Every command is `5A A5 | u16 cmd | u16 dataSize | data | AA EE` (little-endian); every reply is 8 bytes,
`5A A5 | u16 cmd (echo) | u16 status | AA EE`, status 0 = success, 1 = failure, except READ_FPGA_VERSION whose
status carries the version. The FPGA also sends unsolicited SYSTEM_ERROR (0x0A) status packets (e.g.
0x0100 "record completed") to the same host port; the client keeps them in `async_status` instead of
mistaking them for the reply it waits for.

Data packets on port 4098 are handled in `dca1000_receiver.py`; pcap/bin readers in `dca1000_files.py`.
Reference: ../shared/reference/ti_mmwave.md §3.
"""
from __future__ import annotations

import enum
import ipaddress
import logging
import socket
import struct
import time
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

HEADER = 0xA55A            # bytes 5A A5
FOOTER = 0xEEAA            # bytes AA EE
REPLY_LEN = 8
DEFAULT_HOST = "192.168.33.30"
DEFAULT_BOARD = "192.168.33.180"
CONFIG_PORT = 4096
DATA_PORT = 4098
FPGA_CLK_PERIOD_NS = 8     # record-delay ticks are 8 ns FPGA clocks (TI RF_API)


class Cmd(enum.IntEnum):
    RESET_FPGA = 0x01
    RESET_AR_DEV = 0x02
    CONFIG_FPGA_GEN = 0x03
    CONFIG_EEPROM = 0x04
    RECORD_START = 0x05
    RECORD_STOP = 0x06
    PLAYBACK_START = 0x07
    PLAYBACK_STOP = 0x08
    SYSTEM_CONNECT = 0x09
    SYSTEM_ERROR = 0x0A        # FPGA → host asynchronous status; also accepted as a request
    CONFIG_PACKET_DATA = 0x0B  # record delay / packet size
    CONFIG_DATA_MODE_AR_DEV = 0x0C
    INIT_FPGA_PLAYBACK = 0x0D
    READ_FPGA_VERSION = 0x0E


# request payload sizes the FPGA accepts (None = any length); used by the emulator and to fail early here
PAYLOAD_SIZES: dict[int, int | None] = {
    Cmd.RESET_FPGA: 0, Cmd.RESET_AR_DEV: 0, Cmd.CONFIG_FPGA_GEN: 6, Cmd.CONFIG_EEPROM: 18,
    Cmd.RECORD_START: 0, Cmd.RECORD_STOP: 0, Cmd.PLAYBACK_START: 0, Cmd.PLAYBACK_STOP: 0,
    Cmd.SYSTEM_CONNECT: 0, Cmd.SYSTEM_ERROR: 0, Cmd.CONFIG_PACKET_DATA: 6, Cmd.CONFIG_DATA_MODE_AR_DEV: None,
    Cmd.INIT_FPGA_PLAYBACK: None, Cmd.READ_FPGA_VERSION: 0,
}

# bits of the asynchronous SYSTEM_ERROR status (DCA1000 CLI developer guide §2.2.6)
ASYNC_BITS = {0: "NO_LVDS_DATA", 1: "NO_HEADER", 2: "EEPROM_FAILURE", 7: "DDR_FULL", 8: "REC_COMPLETED",
              9: "LVDS_BUFFER_FULL", 10: "PLAYBACK_COMPLETED", 11: "PLAYBACK_OUT_OF_SEQ"}
REC_COMPLETED = 1 << 8
PLAYBACK_COMPLETED = 1 << 10


class DcaError(RuntimeError):
    """A DCA1000 command failed: timeout, malformed reply, or status != success."""


def cmd_name(code: int) -> str:
    try:
        return Cmd(code).name
    except ValueError:
        return f"0x{code:02X}"


def encode_command(cmd: int, payload: bytes = b"") -> bytes:
    return struct.pack("<HHH", HEADER, int(cmd), len(payload)) + bytes(payload) + struct.pack("<H", FOOTER)


def decode_command(buf: bytes) -> tuple[int, bytes]:
    """Parse a host→FPGA request; raises ValueError naming what is wrong."""
    if len(buf) < 8:
        raise ValueError(f"request is {len(buf)} bytes, shorter than the 8-byte minimum")
    header, cmd, size = struct.unpack_from("<HHH", buf)
    if header != HEADER:
        raise ValueError(f"request header 0x{header:04X}, expected 0x{HEADER:04X} (bytes 5A A5)")
    if len(buf) != 8 + size:
        raise ValueError(f"request {cmd_name(cmd)} declares {size} data bytes but carries {len(buf) - 8}")
    (footer,) = struct.unpack_from("<H", buf, 6 + size)
    if footer != FOOTER:
        raise ValueError(f"request footer 0x{footer:04X}, expected 0x{FOOTER:04X} (bytes AA EE)")
    return cmd, bytes(buf[6:6 + size])


@dataclass(frozen=True)
class Reply:
    cmd: int
    status: int

    @property
    def name(self) -> str:
        return cmd_name(self.cmd)

    @property
    def ok(self) -> bool:
        if self.cmd == Cmd.READ_FPGA_VERSION:
            return True                       # status carries the version
        if self.cmd == Cmd.SYSTEM_ERROR:      # async status: "completed" bits are not failures
            return self.status & ~(REC_COMPLETED | PLAYBACK_COMPLETED) == 0
        return self.status == 0

    def to_dict(self) -> dict:
        d = {"cmd": self.cmd, "name": self.name, "status": self.status, "ok": self.ok}
        if self.cmd == Cmd.READ_FPGA_VERSION:
            d["version"] = fpga_version(self.status)
        if self.cmd == Cmd.SYSTEM_ERROR and self.status:
            d["flags"] = async_flags(self.status)
        return d


def encode_reply(cmd: int, status: int) -> bytes:
    return struct.pack("<HHHH", HEADER, int(cmd), int(status) & 0xFFFF, FOOTER)


def decode_reply(buf: bytes) -> Reply:
    """Parse an FPGA→host reply/status packet; raises DcaError naming what is wrong."""
    if len(buf) != REPLY_LEN:
        raise DcaError(f"DCA1000 reply is {len(buf)} bytes, expected {REPLY_LEN}: {bytes(buf[:16]).hex(' ')}")
    header, cmd, status, footer = struct.unpack("<HHHH", buf)
    if header != HEADER or footer != FOOTER:
        raise DcaError(f"DCA1000 reply framing wrong (header 0x{header:04X}, footer 0x{footer:04X}; "
                       f"expected 0x{HEADER:04X}/0x{FOOTER:04X}): {bytes(buf).hex(' ')}")
    return Reply(cmd, status)


def fpga_version(status: int) -> dict:
    """READ_FPGA_VERSION status: bits 0-6 major, 7-13 minor, bit 14 = playback image."""
    return {"major": status & 0x7F, "minor": (status >> 7) & 0x7F, "playback": bool(status & (1 << 14))}


def async_flags(status: int) -> list[str]:
    return [ASYNC_BITS.get(b, f"BIT{b}") for b in range(16) if status & (1 << b)]


def fpga_config_payload(log_mode: int = 1, lvds_mode: int = 2, transfer_mode: int = 1, capture_mode: int = 2,
                        data_format: int = 3, timer_s: int = 30) -> bytes:
    """CONFIG_FPGA_GEN data: raw logging, 2-lane LVDS (4 for xWR14xx), LVDS capture, Ethernet, 16-bit."""
    checks = {"log_mode": (log_mode, (1, 2)), "lvds_mode": (lvds_mode, (1, 2)), "transfer_mode": (transfer_mode, (1, 2)),
              "capture_mode": (capture_mode, (1, 2)), "data_format": (data_format, (1, 2, 3))}
    for k, (v, allowed) in checks.items():
        if v not in allowed:
            raise ValueError(f"CONFIG_FPGA_GEN {k}={v!r}, expected one of {allowed}")
    if not 0 <= timer_s <= 255:
        raise ValueError(f"CONFIG_FPGA_GEN timer_s={timer_s}, expected 0..255")
    return bytes([log_mode, lvds_mode, transfer_mode, capture_mode, data_format, timer_s])


def packet_delay_payload(delay_us: float = 25.0, packet_size: int = 1472) -> bytes:
    """CONFIG_PACKET_DATA data: u16 packet size, u16 delay in 8-ns FPGA ticks, u16 0 (as TI's RF_API sends it;
    25 µs → 3125 ticks, `c005 350c 0000`)."""
    if not 48 <= packet_size <= 1472:
        raise ValueError(f"packet_size={packet_size}, expected 48..1472")
    ticks = round(delay_us * 1000 / FPGA_CLK_PERIOD_NS)
    if not 0 <= ticks <= 0xFFFF:
        raise ValueError(f"delay_us={delay_us} gives {ticks} ticks, expected 0..65535 (≤ 524 µs)")
    return struct.pack("<HHH", packet_size, ticks, 0)


def eeprom_payload(host_ip: str, board_ip: str, board_mac: str, config_port: int, data_port: int) -> bytes:
    """CONFIG_EEPROM data: IPs and MAC byte-reversed, then u16 config port, u16 data port."""
    mac = bytes(int(x, 16) for x in board_mac.replace("-", ":").split(":"))
    if len(mac) != 6:
        raise ValueError(f"board_mac={board_mac!r}, expected 6 hex octets")
    return (ipaddress.IPv4Address(host_ip).packed[::-1] + ipaddress.IPv4Address(board_ip).packed[::-1]
            + mac[::-1] + struct.pack("<HH", config_port, data_port))


@dataclass
class DCA1000Config:
    """Client for the DCA1000 configuration port.

    `bind` is the host address replies come back to (192.168.33.30:4096 on hardware); `board` the FPGA
    (192.168.33.180:4096). Each command waits `timeout_s` for its echoed reply, retrying `retries` times
    (UDP can drop, and the FPGA ignores requests for a moment after CONFIG_FPGA_GEN)."""
    board: tuple[str, int] = (DEFAULT_BOARD, CONFIG_PORT)
    bind: tuple[str, int] = (DEFAULT_HOST, CONFIG_PORT)
    timeout_s: float = 1.0
    retries: int = 2
    async_status: list = field(default_factory=list)   # unsolicited 0x0A statuses received, in order
    malformed: int = 0                                  # replies dropped because their framing was wrong

    def __post_init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            self.sock.bind(tuple(self.bind))
        except OSError as e:
            self.sock.close()
            raise DcaError(f"cannot bind DCA1000 config socket to {self.bind[0]}:{self.bind[1]}: {e} "
                           "(on hardware the host NIC must have 192.168.33.30)") from e
        self.bind = self.sock.getsockname()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def command(self, cmd: int, payload: bytes = b"", *, timeout_s: float | None = None) -> Reply:
        """Send one command and return its validated reply; raise DcaError on timeout or failure status."""
        want = PAYLOAD_SIZES.get(cmd, None)
        if want is not None and len(payload) != want:
            raise DcaError(f"{cmd_name(cmd)} takes {want} data bytes, got {len(payload)}")
        req = encode_command(cmd, payload)
        timeout = self.timeout_s if timeout_s is None else timeout_s
        for attempt in range(self.retries + 1):
            self.sock.sendto(req, tuple(self.board))
            reply = self._wait_reply(cmd, timeout)
            if reply is None:
                log.debug("DCA1000 %s: no reply within %.2f s (attempt %d)", cmd_name(cmd), timeout, attempt + 1)
                continue
            if not reply.ok:
                raise DcaError(f"DCA1000 {cmd_name(cmd)} failed: status {reply.status} "
                               f"(request {req.hex(' ')})")
            return reply
        raise DcaError(f"DCA1000 {cmd_name(cmd)}: no reply from {self.board[0]}:{self.board[1]} after "
                       f"{self.retries + 1} tries of {timeout:.2f} s (is the board powered, SW2.5 set, and the "
                       f"host at {self.bind[0]}?)")

    def _wait_reply(self, cmd: int, timeout: float) -> Reply | None:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                buf, _ = self.sock.recvfrom(2048)
            except (socket.timeout, TimeoutError):
                return None
            try:
                reply = decode_reply(buf)
            except DcaError as e:
                self.malformed += 1
                log.warning("%s (dropped)", e)
                continue
            if reply.cmd == cmd:
                return reply
            if reply.cmd == Cmd.SYSTEM_ERROR:
                self.async_status.append(reply.status)
                log.info("DCA1000 async status 0x%04X %s", reply.status, async_flags(reply.status))
                continue
            self.malformed += 1     # a stale reply to an earlier, timed-out request
            log.warning("DCA1000 reply to %s while waiting for %s (dropped)", reply.name, cmd_name(cmd))

    # named commands ----------------------------------------------------------------------------------
    def connect(self) -> Reply:
        return self.command(Cmd.SYSTEM_CONNECT)

    def read_fpga_version(self) -> dict:
        return fpga_version(self.command(Cmd.READ_FPGA_VERSION).status)

    def reset_fpga(self) -> Reply:
        return self.command(Cmd.RESET_FPGA)

    def reset_radar(self) -> Reply:
        return self.command(Cmd.RESET_AR_DEV)

    def configure_fpga(self, **kw) -> Reply:
        return self.command(Cmd.CONFIG_FPGA_GEN, fpga_config_payload(**kw))

    def configure_record(self, delay_us: float = 25.0, packet_size: int = 1472) -> Reply:
        return self.command(Cmd.CONFIG_PACKET_DATA, packet_delay_payload(delay_us, packet_size))

    def configure_eeprom(self, **kw) -> Reply:
        return self.command(Cmd.CONFIG_EEPROM, eeprom_payload(**kw))

    def start_record(self) -> Reply:
        return self.command(Cmd.RECORD_START)

    def stop_record(self) -> Reply:
        return self.command(Cmd.RECORD_STOP)

    def setup(self, *, lvds_mode: int = 2, delay_us: float = 25.0, settle_s: float = 2.0) -> dict:
        """Bring-up as TI's tools do it: connect, read version, record delay, FPGA config, then ping until
        the FPGA answers again (it ignores requests briefly after CONFIG_FPGA_GEN). Returns the version."""
        self.connect()
        version = self.read_fpga_version()
        self.configure_record(delay_us)
        self.configure_fpga(lvds_mode=lvds_mode)
        deadline = time.monotonic() + settle_s
        while True:
            try:
                self.command(Cmd.SYSTEM_CONNECT, timeout_s=0.2)
                break
            except DcaError:
                if time.monotonic() > deadline:
                    raise
        return version
