"""Scene model shared by the emulated radar and the emulated camera.

A scene is a pure function of (seed, t_s): time is cut into episodes of `scene_s` seconds, episode
`floor(t_s / scene_s)` is drawn from an RNG seeded by (seed, index). The emulated radar and camera run in
different processes and both call `Scene(seed).state(time.monotonic())`, so they see the same objects at
the same instant without talking to each other.

Coordinates (radar = camera origin, as in CRUW's `pol2cart`): x to the right, y up, z forward (boresight).
azimuth = atan2(x, z) (positive to the right), range = horizontal distance sqrt(x^2 + z^2).
The sensors are mounted MOUNT_HEIGHT_M above flat ground (y = -MOUNT_HEIGHT_M).

Classes differ by size, RCS, speed, extent and micro-Doppler (legs/arms, wheels, pedals), each drawn
from overlapping distributions so that a classifier has something to learn but cannot be perfect.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np

from radvis.cruw import OBJECT_CLASSES, SCENE_KINDS, frame_label, label_index
from sim.worlds import World, get_world

MOUNT_HEIGHT_M = 1.0                                 # the default world's; a World can mount the sensors elsewhere
# Objects are kept inside this box so that both sensors see them (camera HFOV is 80 deg by default).
MIN_RANGE_M, MAX_RANGE_M, MAX_AZIMUTH_RAD = 2.5, 23.0, math.radians(32.0)

# Per-class distributions: (mean, sd) for speed m/s; uniform (lo, hi) for sizes; lognormal RCS (median m^2, sigma).
# They overlap on purpose: slow cars, fast pedestrians, large cyclists.
CLASS_PARAMS = {
    "pedestrian": dict(speed=(1.3, 0.45), length=(0.25, 0.45), width=(0.4, 0.6), height=(1.5, 1.95),
                       rcs=(0.7, 0.6), count=(1, 3)),
    "cyclist": dict(speed=(3.8, 1.4), length=(1.5, 1.9), width=(0.5, 0.7), height=(1.6, 1.95),
                    rcs=(1.8, 0.6), count=(1, 2)),
    "car": dict(speed=(4.5, 2.5), length=(3.8, 5.0), width=(1.65, 1.95), height=(1.35, 1.65),
                rcs=(8.0, 0.7), count=(1, 2)),
}


@dataclass
class Scatterers:
    """Point scatterers in the radar frame: positions/velocities (N, 3) [x, y, z], RCS m^2, phase rad."""
    pos: np.ndarray
    vel: np.ndarray
    rcs: np.ndarray
    phase: np.ndarray

    @staticmethod
    def empty() -> "Scatterers":
        z = np.zeros((0, 3))
        return Scatterers(z, z.copy(), np.zeros(0), np.zeros(0))

    @staticmethod
    def concat(items: list["Scatterers"]) -> "Scatterers":
        items = [s for s in items if len(s.rcs)] or [Scatterers.empty()]
        return Scatterers(*(np.concatenate([getattr(s, k) for s in items]) for k in ("pos", "vel", "rcs", "phase")))

    def __len__(self) -> int:
        return len(self.rcs)


@dataclass
class ObjectState:
    obj_id: int
    cls: str
    x: float
    z: float
    vx: float
    vz: float
    heading_rad: float          # direction of travel, atan2(vx, vz)
    length: float
    width: float
    height: float
    colour: tuple               # RGB of clothing/paint, for the camera
    gait_phase: float           # limbs / wheels / pedals phase (rad), for the camera
    scatterers: Scatterers

    @property
    def range_m(self) -> float:
        return math.hypot(self.x, self.z)

    @property
    def azimuth_rad(self) -> float:
        return math.atan2(self.x, self.z)

    @property
    def speed(self) -> float:
        return math.hypot(self.vx, self.vz)

    @property
    def radial_velocity(self) -> float:
        return (self.x * self.vx + self.z * self.vz) / max(self.range_m, 1e-6)


@dataclass
class Clutter:
    """Static world: point scatterers plus what the camera draws for them (poles and walls)."""
    scatterers: Scatterers
    poles: list = field(default_factory=list)   # (x, z, height, width, grey)
    walls: list = field(default_factory=list)   # (x0, z0, x1, z1, height, grey)
    bushes: list = field(default_factory=list)  # (x, z, radius, height, sway_mps, sway_hz, phase)


@dataclass
class SceneState:
    t_s: float
    episode: int
    kind: str                   # what the episode was drawn as (empty/pedestrian/cyclist/car/mixed)
    label: str                  # 4-class label of the frame (radvis.cruw.frame_label), or "mixed"
    objects: list
    clutter: Clutter
    light: float                # global illumination (camera)
    sky: tuple                  # RGB of the sky at the horizon (camera)
    ground: tuple               # RGB of the ground (camera)
    world: World = field(default_factory=lambda: get_world("default"))   # look and sensor mounting

    @property
    def label_index(self) -> int:
        """Class id (index into radvis.cruw.LABELS), -1 for mixed frames (which the 4-class task drops)."""
        return label_index(self.label)

    def scatterers(self) -> Scatterers:
        return Scatterers.concat([o.scatterers for o in self.objects] + [self.clutter.scatterers])

    def truth(self, seed: int = 0) -> dict:
        """Ground truth in the wire format agreed for emulated devices (meta `truth`)."""
        return {"label": self.label, "scene_id": int(self.episode), "kind": self.kind, "seed": int(seed),
                "objects": [{"cls": o.cls, "id": o.obj_id, "range_m": round(o.range_m, 4),
                             "azimuth_rad": round(o.azimuth_rad, 4), "speed_mps": round(o.speed, 3),
                             "radial_velocity_mps": round(o.radial_velocity, 3)} for o in self.objects]}


# ---------------------------------------------------------------------------------------------
# Episode content: drawn once per (seed, index), then evaluated at any time inside the episode
# ---------------------------------------------------------------------------------------------

@dataclass
class _Track:
    """Smooth closed path: an ellipse x = xc + ax cos(w t + p), z = zc + az sin(w t + p)."""
    xc: float
    zc: float
    ax: float
    az: float
    w: float
    p: float

    def at(self, t: float) -> tuple[float, float, float, float]:
        a = self.w * t + self.p
        return (self.xc + self.ax * math.cos(a), self.zc + self.az * math.sin(a),
                -self.ax * self.w * math.sin(a), self.az * self.w * math.cos(a))


@dataclass
class _Object:
    obj_id: int
    cls: str
    track: _Track
    length: float
    width: float
    height: float
    rcs: float
    colour: tuple
    cycle_hz: float             # gait / wheel / cadence frequency
    phase0: float
    body: np.ndarray            # (n, 3) body-frame offsets [lateral, up, forward] of rigid scatterers
    body_rcs: np.ndarray
    body_phase: np.ndarray


def _inside(x: float, z: float, margin: float) -> bool:
    r = math.hypot(x, z)
    return (MIN_RANGE_M + margin <= r <= MAX_RANGE_M - margin
            and abs(math.atan2(x, z)) <= MAX_AZIMUTH_RAD - margin / max(r, 1))


def _draw_track(rng: np.random.Generator, speed: float, margin: float) -> _Track:
    for shrink in np.linspace(1.0, 0.05, 40):
        zc = rng.uniform(MIN_RANGE_M + 2.5, MAX_RANGE_M - 3)
        xc = rng.uniform(-0.45, 0.45) * zc * math.tan(MAX_AZIMUTH_RAD)
        ax = rng.uniform(0.5, 7.0) * shrink
        az = ax * rng.uniform(0.25, 1.0) * (1 if rng.random() < 0.5 else -1)
        if rng.random() < 0.5:
            ax, az = abs(az), ax    # mostly radial or mostly lateral motion
        w = speed / max(0.5 * (abs(ax) + abs(az)), 0.2) * (1 if rng.random() < 0.5 else -1)
        tr = _Track(xc, zc, ax, az, w, rng.uniform(0, 2 * math.pi))
        if all(_inside(*tr.at(t)[:2], margin) for t in np.linspace(0, 2 * math.pi / abs(w), 48)):
            return tr
    return _Track(0.0, 10.0, 0.0, 0.0, 0.0, 0.0)   # unreachable in practice: a parked object on boresight


def _body_points(cls: str, L: float, W: float, H: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Rigid scatterers [lateral, up, forward] (up relative to the ground) and their share of the RCS."""
    if cls == "pedestrian":
        pts = [(0, 0.62 * H, 0), (0, 0.78 * H, 0.05), (0, 0.93 * H, 0), (0, 0.5 * H, 0)]   # torso, chest, head, hips
        w = [0.35, 0.25, 0.1, 0.3]
    elif cls == "cyclist":
        pts = [(0, 0.75 * H, -0.1 * L), (0, 0.93 * H, 0.05 * L), (0, 0.55, 0.0), (0, 0.7, 0.3 * L),
               (0, 0.45, -0.15 * L), (0, 0.9, 0.38 * L)]      # rider torso, head, frame, bars, seat tube, handlebar
        w = [0.3, 0.08, 0.25, 0.15, 0.12, 0.1]
    else:  # car: corners, bumpers, sides, roof edges; corners dominate (dihedral reflections)
        hl, hw = L / 2, W / 2
        pts = [(sx * hw, 0.45, sz * hl) for sx in (-1, 1) for sz in (-1, 1)]                      # 4 corners
        pts += [(0, 0.5, hl), (0, 0.5, -hl)]                                                        # bumpers
        for zz in np.linspace(-hl * 0.7, hl * 0.7, 4):
            pts += [(-hw, 0.6, zz), (hw, 0.6, zz)]                                                  # doors
        pts += [(sx * hw * 0.8, H - 0.15, sz * hl * 0.3) for sx in (-1, 1) for sz in (-1, 1)]      # roof pillars
        w = [0.12] * 4 + [0.08] * 2 + [0.03] * 8 + [0.02] * 4
    pts = np.array(pts, float) + rng.normal(0, 0.03, (len(pts), 3))
    w = np.array(w) * rng.lognormal(0, 0.3, len(w))
    return pts, w / w.sum()


def _clear_of(tr: _Track, L: float, others: list, scene_s: float) -> bool:
    """True when the new track keeps its body clear of every other object over the episode."""
    ts = np.linspace(0, scene_s, 60)
    p = np.array([tr.at(t)[:2] for t in ts])
    for o in others:
        q = np.array([o.track.at(t)[:2] for t in ts])
        if np.min(np.hypot(*(p - q).T)) < (L + o.length) / 2 + 0.4:
            return False
    return True


def _draw_object(rng: np.random.Generator, cls: str, obj_id: int, others: list, scene_s: float,
                 world: World | None = None) -> _Object:
    world = get_world(world)
    p = CLASS_PARAMS[cls]
    speed = float(np.clip(rng.normal(*p["speed"]), 0.2, 12.0))
    L, W, H = (rng.uniform(*p[k]) * m for k, m in zip(("length", "width", "height"), world.scale(cls)))
    for _ in range(30):
        tr = _draw_track(rng, speed, margin=L / 2 + 0.3)
        if _clear_of(tr, L, others, scene_s):
            break
    # (the default world's ranges are the historical 20..230 clothing and 30..220 paint; same draws)
    if cls == "pedestrian":
        cycle = speed / rng.uniform(1.2, 1.6)                  # gait cycle = two steps
        colour = world.colour(rng.integers(*world.clothing, 3))
    elif cls == "cyclist":
        cycle = speed / (2 * math.pi * 0.34)                   # wheel revolutions per second
        colour = world.colour(rng.integers(*world.clothing, 3))
    else:
        cycle = speed / (2 * math.pi * 0.32)
        colour = world.colour(rng.integers(*world.paint, 3))
    body, share = _body_points(cls, L, W, H, rng)
    rcs = float(rng.lognormal(math.log(p["rcs"][0]), p["rcs"][1]))
    return _Object(obj_id, cls, tr, L, W, H, rcs, colour, cycle, rng.uniform(0, 2 * math.pi), body, share * rcs,
                   rng.uniform(0, 2 * math.pi, len(body)))


def _micro(o: _Object, t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Moving parts: body-frame offsets [lateral, up, forward], body-frame velocities, RCS, cycle phase."""
    ph = 2 * math.pi * o.cycle_hz * t + o.phase0
    w = 2 * math.pi * o.cycle_hz
    H = o.height
    if o.cls == "pedestrian":
        # legs swing +-0.35 m about the hips (feet move 0..~2.5x body speed), arms +-0.2 m in anti-phase
        sw = np.array([0.35, -0.35, -0.2, 0.2])
        s = np.array([math.sin(ph), math.sin(ph), math.sin(ph), math.sin(ph)])
        c = np.array([math.cos(ph)] * 4)
        off = np.array([[-0.12, 0.25 * H, 0], [0.12, 0.25 * H, 0], [-0.22, 0.6 * H, 0], [0.22, 0.6 * H, 0]])
        off[:, 2] = sw * s
        vel = np.zeros_like(off)
        vel[:, 2] = sw * w * c
        rcs = np.array([0.12, 0.12, 0.05, 0.05]) * o.rcs
    elif o.cls == "cyclist":
        # two wheels (3 rim points each: rim velocity ranges 0 at the ground .. 2v at the top) + two pedals/feet
        r = 0.34
        # rolling forward: rim angle decreases, so the ground contact point is at rest and the top moves at 2v
        ang = -(ph + np.array([0, 2.1, 4.2, 0.5, 2.6, 4.7]))
        hub_z = np.array([0.5, 0.5, 0.5, -0.5, -0.5, -0.5]) * (o.length - 2 * r)
        off = np.stack([np.zeros(6), r + r * np.sin(ang), hub_z + r * np.cos(ang)], 1)
        vel = np.stack([np.zeros(6), -r * w * np.cos(ang), r * w * np.sin(ang)], 1)
        crank = ph / 2.6 + np.array([0, math.pi])              # gear ratio ~2.6 wheel turns per crank turn
        off = np.vstack([off, np.stack([[-0.12, 0.12], 0.3 + 0.17 * np.sin(crank), 0.17 * np.cos(crank)], 1)])
        wc = 0.17 * w / 2.6
        vel = np.vstack([vel, np.stack([np.zeros(2), wc * np.cos(crank), -wc * np.sin(crank)], 1)])
        rcs = np.r_[np.full(6, 0.03), np.full(2, 0.06)] * o.rcs
    else:
        # four wheels, two rim points each (hub caps and rims carry the micro-Doppler of cars)
        r = 0.32
        hl, hw = 0.33 * o.length, o.width / 2
        hubs = [(sx * hw, sz * hl) for sx in (-1, 1) for sz in (-1, 1)]
        ang = -np.array([ph + k * math.pi for _ in hubs for k in (0, 1)])
        hx = np.repeat([h[0] for h in hubs], 2)
        hz = np.repeat([h[1] for h in hubs], 2)
        off = np.stack([hx, r + r * np.sin(ang), hz + r * np.cos(ang)], 1)
        vel = np.stack([np.zeros(8), -r * w * np.cos(ang), r * w * np.sin(ang)], 1)
        rcs = np.full(8, 0.01) * o.rcs
    return off, vel, rcs, ph


def _object_state(o: _Object, t: float, mount_m: float = MOUNT_HEIGHT_M) -> ObjectState:
    x, z, vx, vz = o.track.at(t)
    speed = math.hypot(vx, vz)
    heading = math.atan2(vx, vz) if speed > 1e-6 else o.track.p
    moff, mvel, mrcs, ph = _micro(o, t)
    off = np.vstack([o.body, moff])
    bvel = np.vstack([np.zeros_like(o.body), mvel])
    # body frame [lateral, up, forward] -> world [x, y, z]: forward = (sin h, cos h), lateral = (cos h, -sin h)
    ch, sh = math.cos(heading), math.sin(heading)
    wx = x + off[:, 0] * ch + off[:, 2] * sh
    wz = z - off[:, 0] * sh + off[:, 2] * ch
    wy = off[:, 1] - mount_m
    vxw = vx + bvel[:, 0] * ch + bvel[:, 2] * sh
    vzw = vz - bvel[:, 0] * sh + bvel[:, 2] * ch
    rcs = np.r_[o.body_rcs, mrcs]
    # self-occlusion: scatterers on the far side of the body (seen from the radar) are weakened
    los = np.array([x, z]) / max(math.hypot(x, z), 1e-6)
    depth = (wx - x) * los[0] + (wz - z) * los[1]
    rcs = rcs * np.where(depth > 0.15 * max(o.width, 0.3), 0.15, 1.0)
    phase = np.r_[o.body_phase, np.linspace(0, 5, len(mrcs)) + o.phase0]
    sc = Scatterers(np.stack([wx, wy, wz], 1), np.stack([vxw, bvel[:, 1], vzw], 1), rcs, phase)
    return ObjectState(o.obj_id, o.cls, x, z, vx, vz, heading, o.length, o.width, o.height, o.colour, ph, sc)


def _draw_clutter(rng: np.random.Generator, mount_m: float = MOUNT_HEIGHT_M) -> Clutter:
    """The world: poles/posts anywhere in the radar's view, sometimes a building wall, and swaying bushes
    (weak scatterers with a little Doppler, so "empty" is not the same as "nothing moves")."""
    n = int(rng.integers(4, 14))
    a = rng.uniform(-1.3, 1.3, n)
    # posts beside the rig can be close; in front of the camera they stand back (a rig is not set up
    # behind a lamppost)
    r = np.where(np.abs(a) < 0.75, rng.uniform(7.0, 27.0, n), rng.uniform(2.0, 27.0, n))
    x, z = r * np.sin(a), r * np.cos(a)
    hgt = rng.uniform(0.5, 4.0, n)
    rcs = rng.lognormal(math.log(0.6), 1.0, n)
    pos = np.stack([x, hgt / 2 - mount_m, z], 1)
    poles = [(float(x[i]), float(z[i]), float(hgt[i]), float(rng.uniform(0.06, 0.25)), int(rng.integers(60, 200)))
             for i in range(n)]
    walls = []
    if rng.random() < 0.5:
        zw = rng.uniform(20.0, 27.0)
        x0, x1 = sorted(rng.uniform(-15, 15, 2))
        xs = np.arange(x0, x1, 0.5)
        pos = np.vstack([pos, np.stack([xs, np.full_like(xs, 2.0 - mount_m), np.full_like(xs, zw)], 1)])
        rcs = np.r_[rcs, rng.lognormal(math.log(0.3), 0.8, len(xs))]
        walls.append((float(x0), float(zw), float(x1), float(zw), float(rng.uniform(4, 10)),
                      int(rng.integers(90, 190))))
    m = len(rcs)
    sc = Scatterers(pos, np.zeros((m, 3)), rcs, rng.uniform(0, 2 * math.pi, m))
    nb = int(rng.integers(0, 5))
    rb, ab = rng.uniform(3.0, 24.0, nb), rng.uniform(-0.7, 0.7, nb)
    bushes = [(float(rb[i] * math.sin(ab[i])), float(rb[i] * math.cos(ab[i])), float(rng.uniform(0.3, 1.0)),
               float(rng.uniform(0.5, 1.8)), float(rng.uniform(0.05, 0.8)), float(rng.uniform(0.3, 2.0)),
               float(rng.uniform(0, 2 * math.pi))) for i in range(nb)]
    return Clutter(sc, poles, walls, bushes)


def _bush_scatterers(bushes: list, t: float, mount_m: float = MOUNT_HEIGHT_M) -> Scatterers:
    """Three leaves per bush swaying about their rest positions (velocity along the line of sight)."""
    if not bushes:
        return Scatterers.empty()
    pos, vel, rcs, ph = [], [], [], []
    for x, z, rad, h, sway, hz, p0 in bushes:
        r = math.hypot(x, z)
        los = np.array([x / r, 0.0, z / r])
        for k in range(3):
            a = 2 * math.pi * hz * (1 + 0.3 * k) * t + p0 + 2.1 * k
            rest = np.array([x + rad * math.cos(2.1 * k), h * (0.4 + 0.25 * k) - mount_m, z])
            pos.append(rest + los * 0.05 * math.sin(a))
            vel.append(los * sway * math.cos(a))
            rcs.append(0.08 * rad)
            ph.append(p0 + k)
    return Scatterers(np.array(pos), np.array(vel), np.array(rcs), np.array(ph))


def _draw_place(rng: np.random.Generator, world: World | None = None) -> tuple:
    """(clutter, light, sky, ground) of one place in `world` (default: the same draws as ever)."""
    world = get_world(world)
    light = float(rng.uniform(*world.light))
    sky = tuple(int(v) for v in np.clip(np.array(world.sky_horizon) + rng.normal(0, 8, 3), 0, 255))
    ground = tuple(int(v) for v in np.clip((rng.uniform(*world.ground) + rng.normal(0, 5, 3)) * np.array(world.ground_tint),
                                           0, 255))
    return _draw_clutter(rng, world.mount_m), light, sky, ground


@dataclass
class _Episode:
    kind: str
    objects: list
    clutter: Clutter
    light: float
    sky: tuple
    ground: tuple


class Scene:
    """Deterministic scene generator: `state(t_s)` is a pure function of (seed, t_s)."""

    def __init__(self, seed: int = 0, scene_s: float = 10.0, classes=SCENE_KINDS, noise: float = 1.0,
                 place: str = "episode", world: "str | World" = "default"):
        bad = [c for c in classes if c not in SCENE_KINDS]
        if bad or not classes:
            raise ValueError(f"scene classes must be a non-empty subset of {SCENE_KINDS}, got {list(classes)}")
        if scene_s <= 0:
            raise ValueError(f"scene_s must be > 0, got {scene_s}")
        if place not in ("episode", "fixed"):
            raise ValueError(f"place must be 'episode' or 'fixed', got {place!r}")
        self.seed, self.scene_s, self.classes, self.noise = int(seed), float(scene_s), tuple(classes), float(noise)
        # "fixed": one place (static clutter, lighting, sky, ground) for the whole run, as a mounted rig sees;
        # "episode": a new place per episode, as a dataset of sequences recorded at many places (synth)
        self.place = place
        self.world = get_world(world)           # look, object build and sensor mounting (sim/worlds.py)

    @classmethod
    def from_config(cls, scfg) -> "Scene":
        return cls(seed=scfg.seed, scene_s=scfg.scene_s, classes=scfg.classes, noise=scfg.noise, place=scfg.place,
                   world=getattr(scfg, "world", "default"))

    def episode_index(self, t_s: float) -> int:
        return int(math.floor(t_s / self.scene_s))

    @functools.lru_cache(maxsize=64)
    def episode(self, index: int, kind: str | None = None) -> _Episode:
        rng = np.random.default_rng([self.seed & 0xFFFFFFFFFFFF, index & 0xFFFFFFFFFFFF, 0x5CE7E])
        kind = kind or str(rng.choice(self.classes))
        if kind == "empty":
            kinds = []
        elif kind == "mixed":
            two = list(rng.choice(OBJECT_CLASSES, 2, replace=False))
            kinds = two + ([str(rng.choice(OBJECT_CLASSES))] if rng.random() < 0.4 else [])
        else:
            lo, hi = CLASS_PARAMS[kind]["count"]
            kinds = [kind] * int(rng.integers(lo, hi + 1))
        objects = []
        for i, c in enumerate(kinds):
            objects.append(_draw_object(rng, str(c), i, objects, self.scene_s, self.world))
        if self.place == "fixed":  # the objects above are the same as with per-episode places
            return _Episode(kind, objects, *self._place(self.seed, self.world))
        return _Episode(kind, objects, *_draw_place(rng, self.world))

    @staticmethod
    @functools.lru_cache(maxsize=8)
    def _place(seed: int, world: World) -> tuple:
        return _draw_place(np.random.default_rng([seed & 0xFFFFFFFFFFFF, 0x91ACE]), world)

    def state(self, t_s: float, kind: str | None = None) -> SceneState:
        """Scene at time t_s >= 0. `kind` forces the episode's kind (synth uses it to balance classes)."""
        if not t_s >= 0:
            raise ValueError(f"t_s must be >= 0, got {t_s}")
        idx = self.episode_index(t_s)
        ep = self.episode(idx, kind)
        t = t_s - idx * self.scene_s
        m = self.world.mount_m
        objects = [_object_state(o, t, m) for o in ep.objects]
        c = ep.clutter
        clutter = Clutter(Scatterers.concat([c.scatterers, _bush_scatterers(c.bushes, t, m)]), c.poles, c.walls, c.bushes)
        return SceneState(float(t_s), idx, ep.kind, frame_label([o.cls for o in objects]), objects, clutter,
                          ep.light, ep.sky, ep.ground, self.world)


def place(objects: list[tuple], *, seed: int = 0, t_s: float = 0.0, clutter: bool = False,
          world: "str | World" = "default") -> SceneState:
    """A hand-built scene state for tests and demos: objects given as (cls, range_m, azimuth_rad[, heading_rad]),
    standing still (no micro-motion); sizes, RCS and colours drawn from the class distributions with `seed`."""
    world = get_world(world)
    rng = np.random.default_rng([seed & 0xFFFFFFFFFFFF, 0x97ACE])
    built = []
    for i, spec in enumerate(objects):
        cls, r, az = spec[:3]
        heading = spec[3] if len(spec) > 3 else math.pi / 2
        o = _draw_object(rng, cls, i, [], 1.0, world)
        o.track = _Track(r * math.sin(az), r * math.cos(az), 0.0, 0.0, 0.0, heading)
        o.cycle_hz = 0.0
        built.append(_object_state(o, 0.0, world.mount_m))
    cl = _draw_clutter(rng, world.mount_m) if clutter else Clutter(Scatterers.empty())
    return SceneState(float(t_s), 0, frame_label([o.cls for o in built]) if built else "empty",
                      frame_label([o.cls for o in built]), built, cl, 1.0, (160, 185, 215), (110, 108, 105), world)
