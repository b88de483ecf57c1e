"""Camera rendering of a scene: a pinhole camera at the radar's position looking along its boresight.

Same mounting as the radar (scene.py coordinates: x right, y up, z forward; camera MOUNT_HEIGHT_M above
the ground, optical axis horizontal), so an object at azimuth theta appears at image column
u = cx + fx * tan(theta) and its ground contact at row v = cy + fy * MOUNT_HEIGHT_M / z.

Objects are class-distinct silhouettes drawn with OpenCV at perspective size (pedestrian: head, torso,
swinging legs and arms; cyclist: two wheels, frame, leaning rider, pedalling legs; car: body, cabin with
windows, wheels, lights), seen from the side or the front depending on heading vs line of sight.
Background: sky gradient, ground with perspective road markings, static poles and walls of the clutter.
Lighting scales everything per episode; sensor noise grows in low light (gain). Output: RGB uint8.

The scene's World (sim/worlds.py) sets the palette, the silhouette style and the mounting: the camera sits
`world.mount_m` above the ground and may look down by `world.pitch_deg` (then depth along the optical axis
is z cos(pitch) - y sin(pitch), and the horizon rises above the image centre).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import cv2
import numpy as np

from sim.scene import SceneState


@dataclass(frozen=True)
class PinholeCamera:
    width: int = 128
    height: int = 96
    hfov_deg: float = 80.0      # CRUW's camera: fx 849 px at 1440 px width -> 80 deg
    height_m: float = 1.0       # above the ground (the scene's world mounts it; render() applies that)
    pitch_deg: float = 0.0      # looking down by this angle

    @property
    def fx(self) -> float:
        return self.width / 2 / math.tan(math.radians(self.hfov_deg) / 2)

    @property
    def fy(self) -> float:
        return self.fx           # square pixels

    @property
    def cx(self) -> float:
        return self.width / 2

    @property
    def cy(self) -> float:
        return self.height / 2

    def intrinsics(self) -> dict:
        return {"fx": self.fx, "fy": self.fy, "cx": self.cx, "cy": self.cy, "model": "pinhole",
                "width": self.width, "height": self.height}

    def depth(self, y, z):
        """Distance along the optical axis of radar-frame point(s) at height y, forward z."""
        if not self.pitch_deg:
            return z
        p = math.radians(self.pitch_deg)
        return np.asarray(z) * math.cos(p) - np.asarray(y) * math.sin(p)

    def project(self, x, y, z):
        """Radar-frame point(s) -> pixel coordinates (u, v); the point must be in front of the camera."""
        if not self.pitch_deg:
            return self.cx + self.fx * np.asarray(x) / z, self.cy - self.fy * np.asarray(y) / z
        p = math.radians(self.pitch_deg)
        zc = self.depth(y, z)
        yc = np.asarray(y) * math.cos(p) + np.asarray(z) * math.sin(p)
        return self.cx + self.fx * np.asarray(x) / zc, self.cy - self.fy * yc / zc

    @property
    def horizon(self) -> float:
        """Image row of the horizon (points at infinity straight ahead)."""
        return self.cy - self.fy * math.tan(math.radians(self.pitch_deg))

    def column(self, azimuth_rad: float) -> float:
        return self.cx + self.fx * math.tan(azimuth_rad)


def _shade(rgb, k: float) -> tuple:
    return tuple(int(np.clip(c * k, 0, 255)) for c in rgb)


class _Canvas:
    """Drawing in supersampled pixel coordinates (cv2 wants ints; `shift` keeps sub-pixel precision)."""
    SHIFT = 4

    def __init__(self, img: np.ndarray, ss: int):
        self.img, self.ss, self.f = img, ss, (1 << self.SHIFT) * ss

    def _p(self, u, v):
        return int(round(u * self.f)), int(round(v * self.f))

    def poly(self, pts, colour):
        arr = np.array([self._p(u, v) for u, v in pts], np.int32)
        cv2.fillPoly(self.img, [arr], colour, cv2.LINE_AA, self.SHIFT)

    def line(self, p0, p1, colour, width_px):
        t = max(1, int(round(width_px * self.ss)))
        cv2.line(self.img, self._p(*p0), self._p(*p1), colour, t, cv2.LINE_AA, self.SHIFT)

    def circle(self, c, r_px, colour, thickness_px=-1):
        t = -1 if thickness_px < 0 else max(1, int(round(thickness_px * self.ss)))
        cv2.circle(self.img, self._p(*c), max(1, int(round(r_px * self.f))), colour, t, cv2.LINE_AA, self.SHIFT)

    def ellipse(self, c, axes_px, colour, thickness_px=-1):
        t = -1 if thickness_px < 0 else max(1, int(round(thickness_px * self.ss)))
        ax = (max(1, int(round(axes_px[0] * self.f))), max(1, int(round(axes_px[1] * self.f))))
        cv2.ellipse(self.img, self._p(*c), ax, 0, 0, 360, colour, t, cv2.LINE_AA, self.SHIFT)


class _BlockyCanvas(_Canvas):
    """The `blocky` world's style: square heads and lights, octagonal wheels and bushes, square-ended limbs."""

    def line(self, p0, p1, colour, width_px):
        (u0, v0), (u1, v1) = p0, p1
        n = math.hypot(u1 - u0, v1 - v0)
        if n < 1e-6:
            return
        w = max(width_px, 0.5) / 2
        du, dv = -(v1 - v0) / n * w, (u1 - u0) / n * w
        self.poly([(u0 + du, v0 + dv), (u1 + du, v1 + dv), (u1 - du, v1 - dv), (u0 - du, v0 - dv)], colour)

    def _octagon(self, c, ax, ay):
        return [(c[0] + ax * math.cos(a), c[1] + ay * math.sin(a)) for a in np.arange(8) * math.pi / 4 + math.pi / 8]

    def circle(self, c, r_px, colour, thickness_px=-1):
        if thickness_px < 0:
            self.poly([(c[0] - r_px, c[1] - r_px), (c[0] + r_px, c[1] - r_px), (c[0] + r_px, c[1] + r_px),
                       (c[0] - r_px, c[1] + r_px)], colour)
        else:
            self.ellipse(c, (r_px, r_px), colour, thickness_px)

    def ellipse(self, c, axes_px, colour, thickness_px=-1):
        pts = self._octagon(c, *axes_px)
        if thickness_px < 0:
            self.poly(pts, colour)
        else:
            for a, b in zip(pts, pts[1:] + pts[:1]):
                self.line(a, b, colour, thickness_px)


def _background(state: SceneState, cam: PinholeCamera, ss: int) -> np.ndarray:
    W, H = cam.width * ss, cam.height * ss
    hor = cam.horizon * ss
    rows = np.arange(H, dtype=np.float32)[:, None]
    sky_top = np.array(state.world.sky_top, np.float32)
    sky_hor = np.array(state.sky, np.float32)
    k = np.clip(rows / max(hor, 1), 0, 1)
    sky = sky_top * (1 - k) + sky_hor * k
    # ground: darker far away (haze lightens it slightly at the horizon), plus fine texture bands
    g = np.array(state.ground, np.float32)
    d = np.clip((rows - hor) / max(H - hor, 1), 0, 1)
    ground = g * (0.8 + 0.3 * d) + 10 * (1 - d)
    img = np.where(rows < hor, sky, ground)[:, None, :].repeat(W, 1)
    return np.clip(img, 0, 255).astype(np.uint8)


def _tint(rgb, k) -> tuple:
    return tuple(int(np.clip(c * t, 0, 255)) for c, t in zip(rgb, k))


def _draw_static(cv: _Canvas, state: SceneState, cam: PinholeCamera) -> None:
    # road edges and dashed centre line on the ground plane (perspective cues)
    w = state.world
    yg = -cam.height_m
    for x in (-7.0, 7.0):
        (u0, u1), (v0, v1) = cam.project([x, x], [yg, yg], np.array([1.5, 60.0]))
        cv.line((u0, v0), (u1, v1), w.road_edge, 0.6)
    for z0 in np.arange(2.0, 40.0, 4.0):
        (u0, u1), (v0, v1) = cam.project([0, 0], [yg, yg], np.array([z0, z0 + 2.0]))
        cv.line((u0, v0), (u1, v1), w.road_centre, 0.5)
    # walls (always far) first; poles are drawn with the objects in depth order
    for x0, z0, x1, z1, h, grey in state.clutter.walls:
        if min(z0, z1) <= 0.5:
            continue
        (ua, ub), (va, vb) = cam.project([x0, x1], [yg, yg], np.array([z0, z1]))
        (_, _), (ta, tb) = cam.project([x0, x1], [yg + h, yg + h], np.array([z0, z1]))
        cv.poly([(ua, va), (ub, vb), (ub, tb), (ua, ta)], _tint((grey, grey - 10, grey - 20), w.wall_tint))


def _draw_pole(cv: _Canvas, pole, cam: PinholeCamera, world) -> None:
    x, z, h, w, grey = pole
    if z <= 0.5:
        return
    yg = -cam.height_m
    (u0, u1), (vb, vt) = cam.project([x - w / 2, x + w / 2], [yg, yg + h], z)
    cv.poly([(u0, vb), (u1, vb), (u1, vt), (u0, vt)], _tint((grey, grey, min(255, grey + 10)), world.pole_tint))


def _draw_bush(cv: _Canvas, bush, cam: PinholeCamera, world) -> None:
    x, z, rad, h = bush[:4]
    if z <= 0.5:
        return
    yc = h / 2 - cam.height_m
    (u,), (v,) = cam.project([x], [yc], z)
    s = cam.fx / cam.depth(yc, z)
    dark, light = world.bush
    cv.ellipse((u, v), (rad * s, h / 2 * s), dark)
    cv.ellipse((u - 0.2 * rad * s, v - 0.15 * h * s), (0.5 * rad * s, 0.25 * h * s), light)


def _draw_object(cv: _Canvas, o, cam: PinholeCamera, world) -> None:  # noqa: C901 (one silhouette per class)
    if o.z <= 0.5:
        return
    yg = -cam.height_m
    s = cam.fx / cam.depth(yg + o.height / 2, o.z)    # pixels per metre at the object's depth
    (uc,), (vg,) = cam.project([o.x], [yg], o.z)      # ground contact point

    def P(lat, up):                                   # object-plane metres -> pixels
        return uc + lat * s, vg - up * s

    rel = o.heading_rad - math.atan2(o.x, o.z)       # 0: moving away/towards the camera (front view)
    side = math.sin(rel)                              # signed side-view factor: +1 faces right in the image
    front = abs(math.cos(rel))
    H, L, W = o.height, o.length, o.width
    ph = o.gait_phase
    col = o.colour
    dark = _shade(col, 0.55)
    if o.cls == "pedestrian":
        skin = world.skin
        legs = world.trousers
        hip, sh = 0.5 * H, 0.8 * H
        sw = 0.3 * math.sin(ph) * side
        for sgn, lat in ((1, -0.09), (-1, 0.09)):
            cv.line(P(lat * front, hip), P(lat * front + sgn * sw, 0.02), legs, 0.13 * s)
        cv.poly([P(-W / 2 * (0.5 + 0.5 * front) * 0.8, hip), P(W / 2 * (0.5 + 0.5 * front) * 0.8, hip),
                 P(W / 2 * (0.5 + 0.5 * front) * 0.75, sh), P(-W / 2 * (0.5 + 0.5 * front) * 0.75, sh)], col)
        for sgn, lat in ((-1, -W / 2 * 0.85), (1, W / 2 * 0.85)):
            cv.line(P(lat * front, sh - 0.02), P(lat * front + sgn * 0.6 * sw, 0.45 * H), dark, 0.09 * s)
        cv.circle(P(0.03 * side, 0.93 * H), 0.11 * s, skin)
    elif o.cls == "cyclist":
        r = 0.34
        half = (L / 2 - r) * side
        tyre = (25, 25, 25)
        frame_c = (min(255, col[2] + 40), col[0] // 2, 40)
        for hub in (-half, half):
            cv.ellipse(P(hub, r), (max(r * abs(side), 0.05) * s, r * s), tyre, 0.06 * s)
        seat, bars = P(-0.15 * half, 0.95), P(0.8 * half, 1.05)
        for a, b in ((P(-half, r), seat), (seat, P(0.05 * half, r)), (P(0.05 * half, r), P(half * 0.75, 0.9)),
                     (P(half, r), bars), (seat, P(0.7 * half, 0.85))):
            cv.line(a, b, frame_c, 0.05 * s)
        crank = ph / 2.6
        for k in (0, math.pi):
            foot = P(0.05 * half + 0.17 * math.cos(crank + k) * side, r + 0.17 * math.sin(crank + k))
            cv.line(seat, foot, world.trousers, 0.12 * s)
        shoulder = P(0.45 * half + 0.02, H * 0.8)
        cv.line(seat, shoulder, col, 0.3 * s * (0.6 + 0.4 * front))
        cv.line(shoulder, bars, dark, 0.08 * s)
        cv.circle((shoulder[0] + 0.08 * side * s, shoulder[1] - 0.2 * s), 0.11 * s, world.skin)
    else:  # car
        extent = abs(L * side) + W * front           # apparent width of the footprint
        half = extent / 2
        body_top, roof = 0.58 * H, H
        glass = (40, 50, 65)
        cv.poly([P(-half, 0.2), P(half, 0.2), P(half, body_top), P(-half, body_top)], col)
        # cabin: set back from the front in side view, centred in front view
        cab_c = -0.1 * L * side
        cab_w = 0.55 * L * abs(side) + 0.85 * W * front
        cv.poly([P(cab_c - cab_w / 2, body_top), P(cab_c + cab_w / 2, body_top),
                 P(cab_c + cab_w * 0.36, roof), P(cab_c - cab_w * 0.36, roof)], dark)
        cv.poly([P(cab_c - cab_w * 0.44, body_top + 0.05), P(cab_c + cab_w * 0.44, body_top + 0.05),
                 P(cab_c + cab_w * 0.3, roof - 0.07), P(cab_c - cab_w * 0.3, roof - 0.07)], glass)
        wr = 0.32
        if abs(side) > 0.25:
            for hub in (-0.33 * L * side, 0.33 * L * side):
                cv.ellipse(P(hub, wr), (wr * abs(side) * s, wr * s), (20, 20, 20))
                cv.ellipse(P(hub, wr), (0.4 * wr * abs(side) * s, 0.4 * wr * s), (150, 150, 150))
        else:
            for lat in (-half * 0.8, half * 0.8):
                cv.poly([P(lat - 0.12, 0.0), P(lat + 0.12, 0.0), P(lat + 0.12, 0.25), P(lat - 0.12, 0.25)], (20, 20, 20))
        if front > 0.2:
            light = (250, 240, 200) if math.cos(rel) < 0 else (200, 30, 30)   # headlights when approaching
            for lat in (-half * 0.75, half * 0.75):
                cv.circle(P(lat, 0.45), 0.09 * s * front * world.car_lights, light)


def render(state: SceneState, cam: PinholeCamera, *, rng: np.random.Generator | None = None,
           noise: float = 1.0) -> np.ndarray:
    """RGB uint8 (height, width, 3) image of the scene state."""
    world = state.world
    cam = dataclasses.replace(cam, height_m=world.mount_m, pitch_deg=world.pitch_deg)   # the rig's mounting
    ss = 2 if cam.width < 640 else 1                 # supersample small frames so thin limbs survive
    img = _background(state, cam, ss)
    cv = (_BlockyCanvas if world.style == "blocky" else _Canvas)(img, ss)
    _draw_static(cv, state, cam)
    # painter's algorithm over objects, poles and bushes together: far to near
    items = ([(o.z, _draw_object, o) for o in state.objects] + [(p[1], _draw_pole, p) for p in state.clutter.poles]
             + [(b[1], _draw_bush, b) for b in state.clutter.bushes])
    for _, draw, item in sorted(items, key=lambda it: -it[0]):
        draw(cv, item, cam, world)
    if ss > 1:
        img = cv2.resize(img, (cam.width, cam.height), interpolation=cv2.INTER_AREA)
    out = img.astype(np.float32) * state.light
    if rng is not None and noise > 0:
        # read noise + gain: darker scenes are amplified more, so they are noisier
        sigma = noise * world.noise * (2.0 + 6.0 * max(0.0, 1.0 - state.light))
        out += rng.normal(0, sigma, out.shape).astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)


def frame_rng(seed: int, frame_number: int) -> np.random.Generator:
    return np.random.default_rng([seed & 0xFFFFFFFFFFFF, frame_number & 0xFFFFFFFFFFFF, 0xCA3])
