"""Named worlds: visibly different renderings of the same traffic, so that a learning result can be checked
on scenes nobody tuned it to (choose parameters on one world, report on the others).

A world fixes what a place looks like (palette, lighting, clutter colours), how objects are built (size
multipliers per class, which also change their radar echo; clothing and paint palettes; the silhouette
style) and how the sensors are mounted (height above the ground, camera pitch) plus a default camera
resolution for `radvis synth`. The traffic itself (classes, counts, speeds, tracks, RCS) comes from the
same distributions in every world, and `default` is exactly the world of earlier versions (same RNG draws,
same pixels).

    radvis synth --out data/dusk --world dusk        # scene.world = "dusk" on a rig

| world | look | sensors | objects | synth image |
|---|---|---|---|---|
| default | blue sky, grey asphalt, daylight 0.45-1.15 | 1.0 m, level | as CLASS_PARAMS | 320x192 |
| dusk | orange-violet sky, dark blue-grey road, light 0.3-0.6 (noisy), lit cars | 1.6 m, 4 deg down | dark clothes, 0.95x | 320x240 |
| snow | white ground, pale overcast sky, bright 0.9-1.25 | 0.7 m, level | bulky coats 1.25x wide, vans 1.35x tall, bright colours | 256x144 |
| blocky | green grass, saturated toy palette | 2.2 m, 9 deg down | blocky silhouettes, 1.15x tall, primary colours | 160x120 |
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class World:
    name: str
    mount_m: float = 1.0                       # radar = camera origin above flat ground
    pitch_deg: float = 0.0                     # camera looks down by this much (0 = optical axis horizontal)
    image_size: tuple = (320, 192)             # `radvis synth` default for this world
    light: tuple = (0.45, 1.15)                # uniform range of a place's illumination
    sky_top: tuple = (60, 100, 170)
    sky_horizon: tuple = (150, 180, 215)       # drawn per place with a N(0, 8) jitter per channel
    ground: tuple = (80, 135)                  # uniform grey level of a place's ground ...
    ground_tint: tuple = (1.0, 1.0, 1.0)       # ... times this per channel
    road_edge: tuple = (200, 200, 190)
    road_centre: tuple = (220, 210, 120)
    pole_tint: tuple = (1.0, 1.0, 1.0)
    wall_tint: tuple = (1.0, 1.0, 1.0)
    bush: tuple = ((50, 95, 45), (70, 120, 55))
    clothing: tuple = (20, 230)                # uniform per RGB channel (pedestrians' and riders' clothes)
    paint: tuple = (30, 220)                   # cars
    skin: tuple = (224, 172, 140)
    trousers: tuple = (45, 45, 70)
    size: tuple = ()                           # ((class, (length, width, height) multipliers), ...)
    style: str = "classic"                     # silhouettes: classic (rounded) | blocky (boxes, octagon wheels)
    noise: float = 1.0                         # camera sensor noise multiplier
    car_lights: float = 1.0                    # head/tail light radius multiplier
    palette_levels: int = 0                    # > 1: snap object colours to this many levels per channel (toys)

    def scale(self, cls: str) -> tuple:
        return dict(self.size).get(cls, (1.0, 1.0, 1.0))

    def colour(self, rgb) -> tuple:
        """An object colour as this world paints it (snapped to `palette_levels` levels if set)."""
        if self.palette_levels > 1:
            step = 255 / (self.palette_levels - 1)
            return tuple(int(round(round(c / step) * step)) for c in rgb)
        return tuple(int(c) for c in rgb)


WORLDS = {
    "default": World("default"),
    "dusk": World("dusk", mount_m=1.6, pitch_deg=4.0, image_size=(320, 240), light=(0.3, 0.6),
                  sky_top=(40, 30, 90), sky_horizon=(235, 140, 90), ground=(55, 90), ground_tint=(0.85, 0.9, 1.15),
                  road_edge=(170, 170, 185), road_centre=(200, 190, 150), pole_tint=(0.75, 0.7, 0.8),
                  wall_tint=(0.9, 0.75, 0.7), bush=((30, 55, 40), (45, 70, 50)), clothing=(10, 120), paint=(20, 160),
                  skin=(200, 150, 125), trousers=(30, 30, 40), size=(("pedestrian", (1.0, 0.95, 0.95)), ("cyclist", (1.0, 0.95, 0.95)),
                                                              ("car", (0.95, 0.95, 0.95))),
                  noise=1.3, car_lights=1.8),
    "snow": World("snow", mount_m=0.7, image_size=(256, 144), light=(0.9, 1.25), sky_top=(175, 185, 195),
                  sky_horizon=(215, 220, 225), ground=(200, 235), ground_tint=(0.97, 0.99, 1.03),
                  road_edge=(120, 120, 125), road_centre=(150, 140, 100), pole_tint=(0.6, 0.55, 0.5),
                  wall_tint=(1.1, 0.85, 0.7), bush=((35, 70, 50), (205, 215, 210)), clothing=(60, 255),
                  paint=(10, 250), trousers=(30, 40, 60),
                  size=(("pedestrian", (1.2, 1.25, 1.0)), ("cyclist", (1.0, 1.15, 1.0)), ("car", (1.1, 1.05, 1.35)))),
    "blocky": World("blocky", mount_m=2.2, pitch_deg=9.0, image_size=(160, 120), light=(0.6, 1.0),
                    sky_top=(120, 170, 240), sky_horizon=(200, 225, 250), ground=(90, 120),
                    ground_tint=(0.55, 1.05, 0.45), road_edge=(250, 250, 250), road_centre=(250, 250, 250),
                    pole_tint=(1.2, 0.6, 0.5), wall_tint=(0.7, 0.75, 1.2), bush=((20, 110, 30), (40, 150, 40)),
                    clothing=(0, 255), paint=(0, 255), skin=(250, 210, 150), trousers=(20, 20, 160),
                    size=(("pedestrian", (1.0, 1.1, 1.15)), ("cyclist", (1.0, 1.0, 1.1)), ("car", (0.9, 1.0, 1.1))),
                    style="blocky", palette_levels=3),
}


def get_world(world: "str | World | None") -> World:
    """A World by name (or the World itself); a clear error names the known worlds."""
    if world is None:
        return WORLDS["default"]
    if isinstance(world, World):
        return world
    try:
        return WORLDS[str(world)]
    except KeyError:
        raise ValueError(f"unknown world {world!r}; known worlds: {', '.join(WORLDS)}") from None
