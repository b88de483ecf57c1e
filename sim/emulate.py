"""`radvis emulate radar|camera`: an emulated device as a stage of its own, reached exactly like hardware.

  emulate radar   the TI board (sim/ti_device.py) serving its CLI and data UARTs where radar.cli_port and
                  radar.data_port say (socket://HOST:PORT: a TCP server, as ser2net exposes a serial port; a
                  path: a pty linked there), and in dca1000 mode the DCA1000 (sim/dca1000_device.py) answering on
                  radar.dca_board:dca_config_port and streaming raw ADC from its port 1024 to
                  radar.dca_host:dca_data_port, as on the real link (board and host have their own addresses:
                  127.0.0.2 and 127.0.0.1 by default, 192.168.33.180 and .30 on hardware). radar.faults act on
                  the UART bytes (uart mode) or the UDP packets (dca1000 mode).
  emulate camera  an HTTP MJPEG camera (sim/mjpeg_server.py, mjpg-streamer's protocol) at camera.url, whose
                  X-Timestamp runs on the camera's own drifting clock.

Both render one Scene (scene.seed) at host CLOCK_MONOTONIC seconds, so two processes see the same world
without talking to each other. Each publishes the scene's ground truth of every frame it captures
(radvis/truth.py) and its counters through the control endpoint (radvis/control.py; the rig republishes the
truth on endpoints.truth), and announces itself ready once it is listening.
"""
from __future__ import annotations

import json
import logging
import queue
import signal
import threading

from radvis.control import announce_ready, control_publisher
from radvis.log import StatsLine
from radvis.truth import truth_message
from radvis.wire import Message

log = logging.getLogger("radvis.emulate")

BOARD_DATA_SOURCE_PORT = 1024     # the DCA1000 FPGA sends raw ADC from UDP port 1024 (ti_mmwave.md §3.1)


class Stage:
    """What both emulator stages share: a stop event set by SIGINT/SIGTERM, the control publisher (used from
    the main thread only: device threads hand truth over through a queue), stats lines."""

    def __init__(self, cfg, name: str, logger: logging.Logger):
        self.cfg, self.name, self.log = cfg, name, logger
        self.stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.stop.set())
        self.ctl = control_publisher(cfg)
        self.outbox: queue.SimpleQueue = queue.SimpleQueue()
        self.truth_sent = 0
        self.line = StatsLine(logger, cfg.rig.stats_interval_s, rates=("frames",))

    def truth(self, stream: str, source: str, frame_number: int, t_capture_s: float, truth: dict | None) -> None:
        """From any thread: the scene's truth of one captured frame."""
        if truth is not None:
            self.outbox.put(truth_message(stream, source, frame_number, int(round(t_capture_s * 1e9)), truth))

    def ready(self, **info) -> None:
        self.log.info("ready: %s", json.dumps(info))
        announce_ready(self.cfg, self.name, **info)

    def serve(self, stats) -> None:
        """Until stopped: send queued truth, log and publish `stats()` every rig.stats_interval_s."""
        while not self.stop.wait(0.02):
            self._flush()
            self._stats(stats(), force=False)
        self._flush()

    def _flush(self) -> None:
        while True:
            try:
                m = self.outbox.get_nowait()
            except queue.Empty:
                return
            if self.ctl is not None and self.ctl.send(m):
                self.truth_sent += 1

    def _stats(self, st: dict, force: bool) -> None:
        line = self.line.tick({**st, "truth_sent": self.truth_sent}, force=force)
        if line is not None and self.ctl is not None:
            self.ctl.send(Message(kind="stats", source=self.name, meta={"stage": self.name, **line}))

    def close(self, stats) -> None:
        self._flush()
        self._stats(stats(), force=True)
        if self.ctl is not None:
            self.ctl.close()


def _plain_stats(d: dict) -> dict:
    return {k: len(v) if isinstance(v, (list, set)) else v for k, v in d.items()}


class RadarEmulator:
    """The emulated TI board and, in dca1000 mode, its DCA1000, configured from the [radar] section and serving
    where it says. `truth(stream, source, frame_number, t_capture_s, truth)` is called for every frame the host
    can see, with the number the driver gives that frame. Usable in-process (tests) or as the stage."""

    def __init__(self, r, source, truth=None, *, data_source_port: int = BOARD_DATA_SOURCE_PORT):
        from sim.dca1000_device import DCA1000Emulator
        from sim.ti_device import FAULT_KEYS, EmulatedTI
        bad = set(r.faults) - FAULT_KEYS
        if bad:
            raise ValueError(f"radar.faults: unknown key(s) {sorted(bad)} (expected some of {sorted(FAULT_KEYS)})")
        if not r.cli_port or (r.mode == "uart" and not r.data_port):
            raise ValueError(f"radar.cli_port{'' if r.mode == 'dca1000' else ' and radar.data_port'} must say where "
                             "the emulated board serves its UARTs (socket://HOST:PORT or a path)")
        self.r, self.truth = r, truth
        self.dca = None
        if r.mode == "dca1000":
            self.dca = DCA1000Emulator(host=r.dca_board, config_port=r.dca_config_port,
                                       data_dest=(r.dca_host, r.dca_data_port), data_source_port=data_source_port,
                                       iq_order="qi" if r.iq_order == "auto" else r.iq_order, faults=r.faults)
        try:
            self.board = EmulatedTI(None, source, faults=r.faults if r.mode == "uart" else {}, mode=r.mode,
                                    on_frame=self._on_frame, cli_port=r.cli_port, data_port=r.data_port or None,
                                    data_baud=r.data_baud)
        except Exception:
            self.close()
            raise

    def _on_frame(self, fn: int, t_s: float, content) -> None:
        if self.dca is not None:    # the host numbers raw frames by their place in the recording, from 1
            k = self.dca.send_frame(content.adc)
            if k is None:
                return              # not recording: the board drops it, the host never sees this frame
            fn = k + 1
        if self.truth is not None:
            self.truth("radar", self.r.source, fn, t_s, content.truth)

    def start(self) -> "RadarEmulator":
        if self.board._thread is not None:
            return self                 # already running
        try:
            if self.dca is not None:
                self.dca.start()
            self.board.start()
        except Exception:
            self.close()
            raise
        return self

    def info(self) -> dict:
        d = {"mode": self.r.mode, "cli_port": self.board.cli_port_url, "data_port": self.board.data_port_url}
        if self.dca is not None:
            d["dca_board"] = "{}:{}".format(*self.dca.config_address[:2])
            d["dca_data_dest"] = "{}:{}".format(*self.dca.data_dest[:2])
        return d

    def stats(self) -> dict:
        st = {"frames": self.board.counts["frames"], "uart": dict(self.board.counts)}
        if self.dca is not None:
            st["dca"] = _plain_stats(self.dca.stats.to_dict())
        return st

    def close(self) -> None:
        if getattr(self, "board", None) is not None:
            self.board.stop()
        if self.dca is not None:
            self.dca.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()


def emulate_radar(cfg, logger: logging.Logger | None = None) -> int:
    """`radvis emulate radar`. Returns 2 for a configuration error (the rig does not restart those)."""
    from sim.scene_source import SceneRadarSource
    logger = logger or log
    from threadpoolctl import threadpool_limits
    threadpool_limits(1)  # per-frame matmuls are small: BLAS thread pools only fight the other stages for cores
    stage = Stage(cfg, "emulate-radar", logger)
    try:
        emu = RadarEmulator(cfg.radar, SceneRadarSource.from_config(cfg), stage.truth).start()
    except ValueError as e:
        logger.error("%s: %s", cfg.source, e)
        stage.close(dict)
        return 2
    except OSError as e:
        logger.error("emulate radar: cannot serve the board's ports: %s", e)
        stage.close(dict)
        return 1
    stage.ready(**emu.info())
    try:
        stage.serve(emu.stats)
    finally:
        emu.close()
        stage.close(emu.stats)
    logger.info("emulated board stopped: %s", json.dumps(emu.stats(), default=str))
    return 0


class CameraEmulator:
    """The emulated camera (sim/camera_device.py) serving MJPEG at the [camera] section's url; `truth(...)` is
    called for every frame it captures. Usable in-process (tests) or as the stage."""

    def __init__(self, c, scene, truth=None, *, noise: float = 1.0, jpeg_quality: int = 95, **camera_kw):
        from urllib.parse import urlsplit

        from sim.camera_device import EmulatedCamera
        from sim.mjpeg_server import MjpegServer
        u = urlsplit(c.url)
        if u.scheme != "http" or not u.hostname:
            raise ValueError(f"camera.url: expected http://HOST:PORT/?action=stream, got {c.url!r}")
        self.c, self.truth, self.quality = c, truth, jpeg_quality
        self.camera = EmulatedCamera(scene, width=c.width, height=c.height, fps=c.fps, hfov_deg=c.hfov_deg,
                                     noise=noise, **camera_kw)
        self.server = MjpegServer(u.hostname, u.port or 80)
        self.stop_event = threading.Event()
        self.jpeg_bytes = 0
        self.thread = threading.Thread(target=self._run, name="emulated-camera", daemon=True)

    def url(self) -> str:
        return self.server.url()

    def _run(self) -> None:
        import cv2
        for shot in self.camera.frames(self.stop_event):
            ok, buf = cv2.imencode(".jpg", shot.image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, self.quality])
            if not ok:
                log.error("JPEG encoding of frame %d failed", shot.k)
                continue
            if self.truth is not None:   # before the frame leaves: truth never trails its frame by much
                self.truth("camera", self.c.source, shot.k, shot.t_cap, shot.truth)
            self.server.publish(buf.tobytes(), shot.sensor_us, shot.k)
            self.jpeg_bytes += buf.nbytes

    def start(self) -> "CameraEmulator":
        if self.thread.is_alive():
            return self
        self.server.start()
        self.thread.start()
        return self

    def stats(self) -> dict:
        return {**self.camera.stats, **self.server.stats, "jpeg_bytes": self.jpeg_bytes}

    def close(self) -> None:
        self.stop_event.set()
        if self.thread.is_alive():
            self.thread.join(5)
        self.server.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()


def emulate_camera(cfg, logger: logging.Logger | None = None) -> int:
    """`radvis emulate camera`."""
    from sim.scene import Scene
    logger = logger or log
    stage = Stage(cfg, "emulate-camera", logger)
    try:
        emu = CameraEmulator(cfg.camera, Scene.from_config(cfg.scene), stage.truth, noise=cfg.scene.noise).start()
    except ValueError as e:
        logger.error("%s: %s", cfg.source, e)
        stage.close(dict)
        return 2
    except OSError as e:
        logger.error("emulate camera: cannot listen on %s: %s", cfg.camera.url, e)
        stage.close(dict)
        return 1
    c = cfg.camera
    stage.ready(url=emu.url(), width=c.width, height=c.height, fps=c.fps)
    try:
        stage.serve(emu.stats)
    finally:
        emu.close()
        stage.close(emu.stats)
    logger.info("emulated camera stopped: %s", json.dumps(emu.stats()))
    return 0
