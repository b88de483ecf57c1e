"""radvis messages -> Foxglove well-known schemas: what the recorder writes beside the exact multipart channels
and what `radvis view` serves live, so the Foxglove app (and any MCAP tool that knows the schemas) shows the rig.

One `Converter` turns each wire message into zero or more `Out` records (topic, schema, encoded bytes):

    radar   -> /radar/heatmap          foxglove.RawImage rgb8 (range-azimuth magnitude, colormap, fixed dB scale)
               /radar/points           foxglove.PointCloud (UART mode: x, y, z, doppler float32; frame "radar")
    camera  -> /camera/image           foxglove.CompressedImage jpeg (JPEG frames pass through unchanged)
    pair    -> /pairs                  JSON: the link between the two stamps (seq, frame numbers, times, skew)
               /camera/pair            foxglove.ImageAnnotations: "radar #N, skew x ms" on that camera frame
    truth   -> /truth/scene            foxglove.SceneUpdate: a box and a label per object (frame "radar")
               /radar/heatmap/truth    foxglove.ImageAnnotations: a circle per object on the heatmap
               /camera/truth           foxglove.ImageAnnotations: a line at each object's image column
    stats   -> /stats/<stage>          JSON: the stage's counters (view only; the learner's carry loss and probe)

Every image-like message is stamped with its frame's host wall-clock arrival (header `t.wall_ns`), and the
annotations of a frame carry the same stamp, which is how Foxglove's Image panel matches them to that frame.
Ground truth (emulated devices only) comes from the `truth` topic (COORD contract: joined to its frame by
(source, frame_number), in either order, bounded memory) or, from older emulators, from a frame's
meta["truth"]. Real devices have none, and nothing is written for them.

Heatmap scale (docs/recording.md): 20 log10 |RA| of the (128, 128) complex map, clipped to
[heatmap_db_min, heatmap_db_max] and mapped linearly onto the colormap (OpenCV's); far range at the top row,
azimuth -90 deg (left) .. +90 deg (right), columns uniform in sin(azimuth) as on the ROD2021 grid.

`decode()` reads a message back with nothing but the schema stored beside it (protobuf descriptors or a JSON
schema), as Foxglove does.
"""
from __future__ import annotations

import json
import math
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from drivers.ti import dsp
from radvis.wire import Message

# topics
CAMERA, CAMERA_PAIR, CAMERA_TRUTH = "/camera/image", "/camera/pair", "/camera/truth"
HEATMAP, HEATMAP_TRUTH, POINTS = "/radar/heatmap", "/radar/heatmap/truth", "/radar/points"
PAIRS, SCENE = "/pairs", "/truth/scene"
RADAR_FRAME = "radar"  # frame_id of points and truth: TI's radar frame, x right, y boresight, z up (metres)

# JSON schemas of the non-image channels (encoding "json", schema encoding "jsonschema")
_TIME = {"type": "object", "properties": {"sec": {"type": "integer"}, "nsec": {"type": "integer"}}}
_STAMP = {"type": "object", "properties": {
    "source": {"type": "string"}, "seq": {"type": "integer"}, "epoch": {"type": "integer"},
    "frame_number": {"type": ["integer", "null"]}, "t_wall_ns": {"type": "integer"}, "t_mono_ns": {"type": "integer"},
    "t_ns": {"type": ["integer", "null"], "description": "clock-mapped capture time the synchroniser paired on"}}}
JSON_SCHEMAS = {
    "radvis.PairLink": {"title": "radvis.PairLink", "description": "one radar-camera pair: the two frames it links",
                        "type": "object", "properties": {"timestamp": _TIME, "radar": _STAMP, "camera": _STAMP,
                                                         "skew_ms": {"type": "number"}, "t_pair_ns": {"type": "integer"},
                                                         "replay": {"type": "boolean"}}},
    "radvis.Stats": {"title": "radvis.Stats", "description": "a stage's periodic counters (stats message meta)",
                     "type": "object", "additionalProperties": True},
}

CLASS_COLOUR = {"pedestrian": (1.0, 0.25, 0.25), "cyclist": (1.0, 0.8, 0.1), "car": (0.2, 0.6, 1.0)}
CLASS_SIZE = {"pedestrian": (0.5, 0.5, 1.7), "cyclist": (0.6, 1.7, 1.7), "car": (1.8, 4.4, 1.5)}  # x, y, z in "radar"
JOIN_MAX = 512  # frames and truths waiting for their partner, per kind (bounded: real devices send no truth)


@dataclass
class Out:
    topic: str
    schema: str  # a foxglove.messages class name ("RawImage") or a JSON_SCHEMAS key
    data: bytes
    t_ns: int  # the message's own stamp (the frame's host wall-clock arrival)


# ---------------------------------------------------------------------------------------------
# Schemas
# ---------------------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def schema(name: str) -> tuple[str, str, bytes, str]:
    """(schema name, schema encoding, schema data, message encoding) for an Out.schema."""
    if name in JSON_SCHEMAS:
        return name, "jsonschema", json.dumps(JSON_SCHEMAS[name]).encode(), "json"
    import foxglove.messages as fm
    s = getattr(fm, name).get_schema()
    return s.name, s.encoding, bytes(s.data), "protobuf"


@lru_cache(maxsize=64)
def _protobuf_class(schema_name: str, schema_data: bytes):
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    fds = descriptor_pb2.FileDescriptorSet.FromString(schema_data)
    pool = descriptor_pool.DescriptorPool()
    for f in fds.file:
        pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(schema_name))


def decode(schema_name: str, schema_encoding: str, schema_data: bytes, message_encoding: str, data: bytes):
    """A recorded/served Foxglove message from its bytes and the schema stored with it: a protobuf message
    object for `protobuf`, a dict for `json`."""
    if message_encoding == "json":
        return json.loads(data)
    if message_encoding != "protobuf" or schema_encoding != "protobuf":
        raise ValueError(f"cannot decode message encoding {message_encoding!r} / schema {schema_encoding!r}")
    return _protobuf_class(schema_name, bytes(schema_data)).FromString(bytes(data))


# ---------------------------------------------------------------------------------------------
# Pictures
# ---------------------------------------------------------------------------------------------

COLORMAPS = ("turbo", "viridis", "inferno", "jet", "gray")


@lru_cache(maxsize=8)
def colormap_lut(name: str) -> np.ndarray:
    """(256, 3) uint8 RGB lookup table of an OpenCV colormap."""
    import cv2
    ramp = np.arange(256, dtype=np.uint8).reshape(256, 1)
    if name == "gray":
        return np.repeat(ramp, 3, axis=1)
    bgr = cv2.applyColorMap(ramp, getattr(cv2, f"COLORMAP_{name.upper()}"))
    return np.ascontiguousarray(bgr[:, 0, ::-1])


def heatmap_rgb(ra: np.ndarray, db_min: float, db_max: float, colormap: str = "turbo") -> np.ndarray:
    """(R, A, 2) real/imag range-azimuth map -> (R, A, 3) uint8 RGB picture, far range at the top."""
    ra = np.asarray(ra, dtype=np.float32)
    p = ra[..., 0] * ra[..., 0] + ra[..., 1] * ra[..., 1]
    db = 10.0 * np.log10(np.maximum(p, 1e-30))  # 20 log10 |RA|
    idx = np.clip((db - db_min) * (255.0 / (db_max - db_min)), 0, 255).astype(np.uint8)
    return colormap_lut(colormap)[idx[::-1]]


@lru_cache(maxsize=1)
def _grids() -> tuple[np.ndarray, np.ndarray]:
    return dsp.range_grid(), np.sin(dsp.azimuth_grid())


def heatmap_pixel(range_m: float, azimuth_rad: float, rows: int = 128, cols: int = 128) -> tuple[float, float]:
    """(x, y) pixel centre of a (range, azimuth) point on the heatmap picture (ROD2021 grid)."""
    rg, sg = _grids()
    r = float(np.interp(range_m, rg, np.arange(len(rg))))
    a = float(np.interp(math.sin(azimuth_rad), sg, np.arange(len(sg))))
    return a * cols / len(sg) + 0.5, (rows - 1 - r * rows / len(rg)) + 0.5


def _ts(ns: int):
    from foxglove.messages import Timestamp
    ns = max(int(ns), 0)
    return Timestamp(sec=ns // 1_000_000_000, nsec=ns % 1_000_000_000)


def _colour(rgb, a: float = 1.0):
    from foxglove.messages import Color
    return Color(r=rgb[0], g=rgb[1], b=rgb[2], a=a)


def _stamp(h: dict) -> dict:
    t = h.get("t") or {}
    meta = h.get("meta") or {}
    return {"source": h.get("source", ""), "seq": h.get("seq", 0), "epoch": h.get("epoch", 0),
            "frame_number": meta.get("frame_number"), "t_wall_ns": t.get("wall_ns", 0), "t_mono_ns": t.get("mono_ns", 0)}


# ---------------------------------------------------------------------------------------------
# The converter
# ---------------------------------------------------------------------------------------------

class Converter:
    """Wire messages -> Foxglove records. Stateful only for the truth join (bounded). Never raises on a
    message: a frame it cannot picture is counted in `errors` and skipped (recording goes on)."""

    def __init__(self, db_min: float = -10.0, db_max: float = 30.0, colormap: str = "turbo", jpeg_quality: int = 80,
                 topics: set[str] | None = None):
        if not db_max > db_min:
            raise ValueError(f"heatmap dB scale: db_max ({db_max}) must be above db_min ({db_min})")
        self.db_min, self.db_max, self.colormap, self.jpeg_quality = db_min, db_max, colormap, jpeg_quality
        self.topics = topics  # None = all; else only these output topics are built (the view: what is watched)
        self.frames: OrderedDict = OrderedDict()  # (source, frame_number) -> frame info, waiting for its truth
        self.truths: OrderedDict = OrderedDict()  # (source, frame_number) -> truth meta, waiting for its frame
        self.counts = {"messages": 0, "written": 0, "errors": 0, "truth_joined": 0, "truth_unmatched": 0}
        self.last_error = ""

    @classmethod
    def from_config(cls, fc, topics: set[str] | None = None) -> "Converter":
        return cls(fc.heatmap_db_min, fc.heatmap_db_max, fc.colormap, fc.jpeg_quality, topics)

    def wants(self, topic: str) -> bool:
        return self.topics is None or topic in self.topics

    def convert(self, msg: Message) -> list[Out]:
        self.counts["messages"] += 1
        try:
            fn = {"radar": self._radar, "camera": self._camera, "pair": self._pair, "truth": self._truth,
                  "stats": self._stats}.get(msg.kind)
            out = fn(msg) if fn is not None else []
        except Exception as e:  # a frame we cannot picture must never stop a recording
            self.counts["errors"] += 1
            self.last_error = f"{msg.kind} from {msg.source}: {type(e).__name__}: {e}"[:300]
            return []
        self.counts["written"] += len(out)
        return out

    # -- frames --------------------------------------------------------------------------------
    def _radar(self, m: Message) -> list[Out]:
        out = []
        ra = m.buffers.get("ra")
        if ra is not None and ra.ndim == 3 and ra.shape[-1] == 2 and self.wants(HEATMAP):
            out.append(Out(HEATMAP, "RawImage", self.heatmap(ra, m.t_wall_ns), m.t_wall_ns))
        pts = m.buffers.get("points")
        if pts is not None and self.wants(POINTS):
            out.append(Out(POINTS, "PointCloud", self.points(pts, m.t_wall_ns), m.t_wall_ns))
        shape = tuple(ra.shape[:2]) if ra is not None else (128, 128)
        return out + self._frame_truth(m, {"stream": "radar", "t_ns": m.t_wall_ns, "shape": shape})

    def _camera(self, m: Message) -> list[Out]:
        out = []
        img = m.buffers.get("image")
        if img is not None and self.wants(CAMERA):
            out.append(Out(CAMERA, "CompressedImage", self.camera(img, m.meta, m.t_wall_ns), m.t_wall_ns))
        info = {"stream": "camera", "t_ns": m.t_wall_ns, "intrinsics": m.meta.get("intrinsics"),
                "width": m.meta.get("width"), "height": m.meta.get("height")}
        return out + self._frame_truth(m, info)

    def heatmap(self, ra: np.ndarray, t_ns: int) -> bytes:
        from foxglove.messages import RawImage
        rgb = heatmap_rgb(ra, self.db_min, self.db_max, self.colormap)
        return RawImage(timestamp=_ts(t_ns), frame_id="radar_heatmap", width=rgb.shape[1], height=rgb.shape[0],
                        encoding="rgb8", step=rgb.shape[1] * 3, data=rgb.tobytes()).encode()

    def points(self, pts: np.ndarray, t_ns: int) -> bytes:
        from foxglove.messages import (PackedElementField, PackedElementFieldNumericType, PointCloud, Pose,
                                       Quaternion, Vector3)
        p = np.ascontiguousarray(pts, dtype="<f4").reshape(len(pts), -1)
        names = ("x", "y", "z", "doppler")[:p.shape[1]] + tuple(f"f{i}" for i in range(4, p.shape[1]))
        f32 = PackedElementFieldNumericType.Float32
        return PointCloud(timestamp=_ts(t_ns), frame_id=RADAR_FRAME,
                          pose=Pose(position=Vector3(), orientation=Quaternion(w=1.0)), point_stride=4 * p.shape[1],
                          fields=[PackedElementField(name=n, offset=4 * i, type=f32) for i, n in enumerate(names)],
                          data=p.tobytes()).encode()

    def camera(self, img: np.ndarray, meta: dict, t_ns: int) -> bytes:
        from foxglove.messages import CompressedImage
        if meta.get("encoding") == "jpeg" or img.ndim == 1:
            data = img.tobytes()  # already JPEG on the wire: exactly those bytes
        else:
            import cv2
            bgr = np.ascontiguousarray(img[..., ::-1]) if img.ndim == 3 else img
            ok, enc = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
            if not ok:
                raise ValueError(f"JPEG encoding failed for an image of shape {img.shape}")
            data = enc.tobytes()
        return CompressedImage(timestamp=_ts(t_ns), frame_id="camera", data=data, format="jpeg").encode()

    # -- pairs ----------------------------------------------------------------------------------
    def _pair(self, m: Message) -> list[Out]:
        r, c = m.meta.get("radar") or {}, m.meta.get("camera") or {}
        rs, cs = _stamp(r), _stamp(c)
        rs["t_ns"], cs["t_ns"] = m.meta.get("t_radar_ns"), m.meta.get("t_camera_ns")
        skew_ms = float(m.meta.get("skew_ns", 0)) / 1e6
        t = rs["t_wall_ns"] or m.t_wall_ns
        out = []
        if self.wants(PAIRS):
            link = {"timestamp": {"sec": t // 1_000_000_000, "nsec": t % 1_000_000_000}, "radar": rs, "camera": cs,
                    "skew_ms": skew_ms, "t_pair_ns": m.meta.get("t_pair_ns", 0), "replay": bool(m.replay)}
            out.append(Out(PAIRS, "radvis.PairLink", json.dumps(link, separators=(",", ":")).encode(), t))
        if self.wants(CAMERA_PAIR) and cs["t_wall_ns"]:
            from foxglove.messages import ImageAnnotations, Point2, TextAnnotation
            text = TextAnnotation(timestamp=_ts(cs["t_wall_ns"]), position=Point2(x=2, y=2),
                                  text=f"pair: radar #{rs['frame_number']} skew {skew_ms:+.1f} ms", font_size=9,
                                  text_color=_colour((1, 1, 1)), background_color=_colour((0, 0, 0), 0.6))
            out.append(Out(CAMERA_PAIR, "ImageAnnotations", ImageAnnotations(texts=[text]).encode(), cs["t_wall_ns"]))
        return out

    # -- stats (live view) ------------------------------------------------------------------------
    def _stats(self, m: Message) -> list[Out]:
        stage = str(m.meta.get("stage", m.source)) or "unknown"
        topic = f"/stats/{stage}"
        if not self.wants(topic) and not self.wants("/stats/*"):
            return []
        t = m.t_wall_ns
        body = {"timestamp": {"sec": t // 1_000_000_000, "nsec": t % 1_000_000_000}, **m.meta}
        return [Out(topic, "radvis.Stats", json.dumps(body, separators=(",", ":"), default=str).encode(), t)]

    # -- ground truth ---------------------------------------------------------------------------
    def _frame_truth(self, m: Message, info: dict) -> list[Out]:
        fn = m.meta.get("frame_number")
        if isinstance(m.meta.get("truth"), dict):  # emulators before the truth topic: truth in the frame
            return self._truth_outs(info, m.meta["truth"])
        if fn is None:
            return []
        key = (m.source, int(fn))
        truth = self.truths.pop(key, None)
        if truth is not None:
            self.counts["truth_joined"] += 1
            return self._truth_outs(info, truth)
        _put(self.frames, key, info)
        return []

    def _truth(self, m: Message) -> list[Out]:
        fn = m.meta.get("frame_number")
        if fn is None:
            self.counts["truth_unmatched"] += 1
            return []
        key = (m.source, int(fn))
        info = self.frames.pop(key, None)
        if info is None:
            if _put(self.truths, key, m.meta):
                self.counts["truth_unmatched"] += 1
            return []
        self.counts["truth_joined"] += 1
        return self._truth_outs(info, m.meta)

    def _truth_outs(self, info: dict, truth: dict) -> list[Out]:
        objs = [o for o in truth.get("objects") or [] if isinstance(o, dict)
                and isinstance(o.get("range_m"), (int, float)) and isinstance(o.get("azimuth_rad"), (int, float))]
        t = info["t_ns"]
        out = []
        if info["stream"] == "radar":
            if self.wants(SCENE):
                out.append(Out(SCENE, "SceneUpdate", self.scene(objs, truth, t), t))
            if self.wants(HEATMAP_TRUTH):
                out.append(Out(HEATMAP_TRUTH, "ImageAnnotations", self.heatmap_truth(objs, truth, t, info["shape"]), t))
        elif self.wants(CAMERA_TRUTH) and (info.get("intrinsics") or truth.get("intrinsics")):
            # an MJPEG camera's frames carry no intrinsics; the emulated camera puts its lens in the truth
            info = {**info, "intrinsics": info.get("intrinsics") or truth.get("intrinsics")}
            out.append(Out(CAMERA_TRUTH, "ImageAnnotations", self.camera_truth(objs, truth, t, info), t))
        return out

    def scene(self, objs: list, truth: dict, t_ns: int) -> bytes:
        from foxglove.messages import (CubePrimitive, Pose, Quaternion, SceneEntity, SceneEntityDeletion,
                                       SceneEntityDeletionType, SceneUpdate, TextPrimitive, Vector3)
        ents = []
        for i, o in enumerate(objs):
            cls = str(o.get("cls", "object"))
            r, a = float(o["range_m"]), float(o["azimuth_rad"])
            x, y = r * math.sin(a), r * math.cos(a)
            sx, sy, sz = CLASS_SIZE.get(cls, (1.0, 1.0, 1.0))
            col = CLASS_COLOUR.get(cls, (0.8, 0.8, 0.8))
            q = Quaternion(w=1.0)
            ents.append(SceneEntity(
                timestamp=_ts(t_ns), frame_id=RADAR_FRAME, id=f"obj-{o.get('id', i)}",
                cubes=[CubePrimitive(pose=Pose(position=Vector3(x=x, y=y, z=0.0), orientation=q), size=Vector3(x=sx, y=sy, z=sz),
                                     color=_colour(col, 0.5))],
                texts=[TextPrimitive(pose=Pose(position=Vector3(x=x, y=y, z=sz), orientation=q), billboard=True,
                                     font_size=14, scale_invariant=True, color=_colour((1, 1, 1)),
                                     text=f"{cls} {r:.1f} m")]))
        return SceneUpdate(deletions=[SceneEntityDeletion(timestamp=_ts(t_ns), type=SceneEntityDeletionType.All)],
                           entities=ents).encode()

    def heatmap_truth(self, objs: list, truth: dict, t_ns: int, shape) -> bytes:
        from foxglove.messages import CircleAnnotation, ImageAnnotations, Point2, TextAnnotation
        circles, texts = [], [TextAnnotation(timestamp=_ts(t_ns), position=Point2(x=2, y=2),
                                             text=f"truth: {truth.get('label', '?')}", font_size=8,
                                             text_color=_colour((1, 1, 1)), background_color=_colour((0, 0, 0), 0.6))]
        for o in objs:
            cls = str(o.get("cls", "object"))
            x, y = heatmap_pixel(float(o["range_m"]), float(o["azimuth_rad"]), shape[0], shape[1])
            col = _colour(CLASS_COLOUR.get(cls, (1, 1, 1)))
            circles.append(CircleAnnotation(timestamp=_ts(t_ns), position=Point2(x=x, y=y), diameter=9, thickness=1.5,
                                            outline_color=col, fill_color=_colour((0, 0, 0), 0.0)))
            texts.append(TextAnnotation(timestamp=_ts(t_ns), position=Point2(x=x + 6, y=y - 6), text=cls, font_size=7,
                                        text_color=col, background_color=_colour((0, 0, 0), 0.0)))
        return ImageAnnotations(circles=circles, texts=texts).encode()

    def camera_truth(self, objs: list, truth: dict, t_ns: int, info: dict) -> bytes:
        from foxglove.messages import (ImageAnnotations, Point2, PointsAnnotation, PointsAnnotationType,
                                       TextAnnotation)
        k = info["intrinsics"]
        fx, cx = float(k["fx"]), float(k["cx"])
        h = float(info.get("height") or 2 * float(k.get("cy", 0)))
        lines, texts = [], [TextAnnotation(timestamp=_ts(t_ns), position=Point2(x=2, y=h - 12),
                                           text=f"truth: {truth.get('label', '?')}", font_size=9,
                                           text_color=_colour((1, 1, 1)), background_color=_colour((0, 0, 0), 0.6))]
        for o in objs:
            a = float(o["azimuth_rad"])
            if abs(a) >= math.pi / 2:
                continue
            u = cx + fx * math.tan(a)
            cls = str(o.get("cls", "object"))
            col = _colour(CLASS_COLOUR.get(cls, (1, 1, 1)))
            lines.append(PointsAnnotation(timestamp=_ts(t_ns), type=PointsAnnotationType.LineList,
                                          points=[Point2(x=u, y=0), Point2(x=u, y=h)], outline_color=col, thickness=1))
            texts.append(TextAnnotation(timestamp=_ts(t_ns), position=Point2(x=u + 2, y=14), font_size=8, text=cls,
                                        text_color=col, background_color=_colour((0, 0, 0), 0.4)))
        return ImageAnnotations(points=lines, texts=texts).encode()


def _put(d: OrderedDict, key, value) -> bool:
    """Insert into a bounded join map; True if that pushed the oldest entry out (it will never be matched)."""
    d[key] = value
    if len(d) > JOIN_MAX:
        d.popitem(last=False)
        return True
    return False
