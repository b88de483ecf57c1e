"""CLI port: the emulated demo CLI reproduces the real transcript byte for byte; the client works over
pyserial URLs (pty, socket://, loop://), reads to the prompt, and stops on the first refused line."""
from __future__ import annotations

import socket
import threading

import pytest

from sim.ti_device import BANNER, DemoCli, EmulatedTI
from drivers.ti.cfg import parse_cfg
from drivers.ti.cli_port import CliError, CliPort

RADVIS_CFG = "drivers/ti/cfgs/radvis_iwr1843.cfg"


def test_emulated_cli_matches_the_real_hardware_transcript():
    # gaoweifan/pyRadar#3 (IWR1843 SDK demo, host sends cmd + "\n"), quoted in the reference §2.1
    cli = DemoCli()
    assert cli.feed(b"sensorStop\n") == b"sensorStop\nIgnored: Sensor is already stopped\n\rDone\n\rmmwDemo:/>"
    assert cli.feed(b"flushCfg\n") == b"flushCfg\nDone\n\rmmwDemo:/>"
    assert cli.feed(b"dfeDataOutputMode 1\n") == b"dfeDataOutputMode 1\nDone\n\rmmwDemo:/>"


def test_emulated_cli_byte_rules():
    cli = DemoCli()
    assert cli.boot() == BANNER.replace("\n", "\n\r").encode() + b"mmwDemo:/>"
    # echo is immediate, byte by byte; nothing else until the line ends
    assert cli.feed(b"flush") == b"flush"
    assert cli.feed(b"Cfg\n") == b"Cfg\nDone\n\rmmwDemo:/>"
    # "\r\n": the \r is echoed and ends the line, the \n is an extra empty line -> extra prompt
    assert cli.feed(b"flushCfg\r\n") == b"flushCfg\r\nDone\n\rmmwDemo:/>\nmmwDemo:/>"
    assert cli.feed(b"% a comment\n") == b"% a comment\nSkipped\n\rmmwDemo:/>"
    assert cli.feed(b"frobnicate 1\n") == b"frobnicate 1\n'frobnicate' is not recognized as a CLI command\n\rmmwDemo:/>"
    assert cli.feed(b"adcCfg 2\n") == b"adcCfg 2\nError: Invalid usage of the CLI command\n\rError -1\n\rmmwDemo:/>"
    assert cli.feed(b"sensorStart\n").endswith(
        b"Error: Full configuration must be provided before sensor can be started the first time\n\rError -1\n\rmmwDemo:/>")


def test_configure_over_pty_then_sensor_already_running():
    rc = parse_cfg(RADVIS_CFG)
    with EmulatedTI(rc.text()) as emu, CliPort(emu.cli_port_url, timeout_s=2.0) as cli:
        replies = cli.configure(rc.lines, source="radvis.cfg")
        assert [r.line for r in replies] == rc.commands
        assert replies[0].status == "ignored" and replies[0].lines == ["Ignored: Sensor is already stopped", "Done"]
        assert all(r.status == "done" for r in replies[1:])
        assert replies[-1].lines == ["Debug: Init Calibration Status = 0x1ffe", "Done"]
        assert emu.running and emu.counts["starts"] == 1
        assert cli.send("queryDemoStatus").lines[:2] == ["Sensor State: 2", "Data port baud rate: 921600"]
        # the sensor is running; a cfg without sensorStop still works because the client stops it first
        replies = cli.configure(rc.lines[1:])
        assert replies[0].line == "sensorStop" and replies[0].status == "done"
        assert emu.counts["starts"] == 2
        # without that, config commands are ignored while running (a warning, not a failure)
        r = cli.send("profileCfg 0 77 7 6 40 0 0 21.0017 1 128 4000 0 0 30")
        assert r.status == "ignored" and "not allowed after sensor has started" in r.text


def test_configure_stops_at_first_refused_line_with_its_number():
    rc = parse_cfg(RADVIS_CFG)
    lines = [(ln.lineno, ln.text) for ln in rc.lines]
    k = next(i for i, (_, t) in enumerate(lines) if t.startswith("guiMonitor"))
    bad = lines[:k] + [(lines[k][0], "guiMonitor -1 1 1")] + lines[k + 1:]
    with EmulatedTI() as emu, CliPort(emu.cli_port_url) as cli:
        with pytest.raises(CliError) as e:
            cli.configure(bad, source="x.cfg")
        assert e.value.lineno == lines[k][0] and e.value.line == "guiMonitor -1 1 1"
        assert f"x.cfg:{lines[k][0]}: 'guiMonitor -1 1 1' refused" in str(e.value)
        assert "Error -1" in e.value.reply
        assert not emu.running
        # SDK 3.5 refuses the first start without calibData: the error names the sensorStart line
        no_calib = [x for x in lines if not x[1].startswith("calibData")]
        with pytest.raises(CliError) as e:
            cli.configure(no_calib)
        assert e.value.line == "sensorStart" and "Full configuration must be provided" in e.value.reply


class CliServer:
    """The emulated demo CLI behind a TCP socket (a serial-over-network bridge). Its boot banner arrives
    after the host's first bytes, so the client must skip it while waiting for its echo."""

    def __init__(self, answer_lines: int | None = None):
        self.answer_lines = answer_lines       # go silent after this many lines (a hung board)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.port = self.sock.getsockname()[1]
        self.cli = DemoCli()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        conn, _ = self.sock.accept()
        with conn:
            booted = False
            while True:
                data = conn.recv(4096)
                if not data:
                    return
                if not booted:             # the board finishes booting just as the host starts talking
                    conn.sendall(self.cli.boot())
                    booted = True
                if self.answer_lines is not None and self.cli.lines_received >= self.answer_lines:
                    continue
                conn.sendall(self.cli.feed(data))

    def close(self):
        self.sock.close()


def test_socket_url_with_boot_banner():
    srv = CliServer()
    try:
        with CliPort(f"socket://127.0.0.1:{srv.port}") as cli:
            rc = parse_cfg(RADVIS_CFG)
            replies = cli.configure(rc.lines)
            assert replies[-1].status == "done" and srv.cli.running
            assert cli.banner == {"platform": "xWR18xx", "version": "03.05.00.04"}
            v = cli.send("version")
            assert v.ok and v.lines[0].startswith("Platform") and "03.05.00.04" in v.lines[1]
    finally:
        srv.close()


def test_board_hanging_mid_cfg_times_out_on_that_line():
    srv = CliServer(answer_lines=3)
    rc = parse_cfg(RADVIS_CFG)
    try:
        with CliPort(f"socket://127.0.0.1:{srv.port}", timeout_s=0.3) as cli:
            with pytest.raises(CliError) as e:
                cli.configure(rc.lines, source="r.cfg")
        fourth = rc.lines[3]
        assert e.value.lineno == fourth.lineno and e.value.line == fourth.text
        assert str(e.value).startswith(f"r.cfg:{fourth.lineno}: {fourth.text!r}: no prompt within 0.3 s")
    finally:
        srv.close()


def test_no_prompt_times_out_naming_the_line():
    # loop:// echoes what we send but never prints a prompt (like a board that is not running the demo)
    with CliPort("loop://", timeout_s=0.3) as cli:
        with pytest.raises(CliError, match=r"no prompt within 0.3 s after 'sensorStop' \(got b'sensorStop\\n'\)"):
            cli.send("sensorStop")
        with pytest.raises(CliError, match=r"x.cfg: 'loop://' does not answer like the mmWave demo CLI"):
            cli.configure([(7, "sensorStop")], source="x.cfg", stop_first=False)


def test_unopenable_port_is_a_clear_error(tmp_path):
    with pytest.raises(CliError, match="cannot open CLI port"):
        CliPort(str(tmp_path / "ttyNOPE"))
