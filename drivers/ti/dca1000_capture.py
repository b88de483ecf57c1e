"""DCA1000 capture session: bring the board up over the config port, receive frames on the data port, hand
out complex ADC cubes. It talks to whatever board sits at the configured address: the real one
(192.168.33.180, host 192.168.33.30) or the emulated one (the emulate-radar stage, 127.0.0.2 by default).

    cap = DCA1000Capture.from_config(cfg.radar, profile)
    cap.start()                 # SYSTEM_CONNECT, version, record delay, FPGA config, RECORD_START
    ... start the radar (sensorStart) ...
    for frame, adc in cap.frames(): ...
    cap.close()                 # RECORD_STOP
"""
from __future__ import annotations

import logging

from drivers.ti.dca1000 import DCA1000Config
from drivers.ti.dca1000_receiver import DataReceiver, adc_from_raw, lvds_lanes, raw_frame_bytes

log = logging.getLogger(__name__)


class DCA1000Capture:
    def __init__(self, profile, *, host: str = "192.168.33.30", board: str = "192.168.33.180",
                 config_port: int = 4096, data_port: int = 4098, board_config_port: int = 4096,
                 board_data_source: tuple[str, int] | None = None, iq_order: str = "qi", timeout_s: float = 1.0):
        self.profile = profile
        self.iq_order = "qi" if iq_order == "auto" else iq_order
        self.lanes = lvds_lanes(profile)
        self.frame_bytes = raw_frame_bytes(profile, self.lanes)
        self.receiver = DataReceiver(self.frame_bytes, bind=(host, data_port), board=board_data_source)
        try:
            self.config = DCA1000Config(board=(board, board_config_port), bind=(host, config_port),
                                        timeout_s=timeout_s)
        except Exception:
            self.receiver.close()
            raise

    @classmethod
    def from_config(cls, r, profile) -> "DCA1000Capture":
        """From the [radar] config section: this host binds dca_host:dca_config_port and :dca_data_port,
        the board answers at dca_board:dca_config_port."""
        return cls(profile, host=r.dca_host, board=r.dca_board, config_port=r.dca_config_port,
                   board_config_port=r.dca_config_port, data_port=r.dca_data_port, iq_order=r.iq_order)

    @property
    def stats(self):
        return self.receiver.stats

    def start(self) -> dict:
        """Board bring-up and RECORD_START (start recording before the radar so frames align)."""
        version = self.config.setup(lvds_mode=2 if self.lanes == 2 else 1)
        self.config.start_record()
        log.info("DCA1000 FPGA v%d.%d recording, %d bytes per frame", version["major"], version["minor"],
                 self.frame_bytes)
        return version

    def poll(self, timeout_s: float = 1.0) -> list:
        """[(RawFrame, adc complex64 [loops, virtual, samples])] received within `timeout_s`."""
        return [(f, adc_from_raw(f.data, self.profile, self.iq_order, self.lanes))
                for f in self.receiver.poll(timeout_s)]

    def frames(self, timeout_s: float = 1.0):
        while True:
            yield from self.poll(timeout_s)

    def close(self) -> None:
        try:
            self.config.stop_record()
        except Exception as e:          # the board may be gone; closing must still release the sockets
            log.warning("DCA1000 RECORD_STOP: %s", e)
        self.config.close()
        self.receiver.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
