"""What a radar frame should become (docs/learner.md "Radar input"): the information a supervised `tiny`
encoder finds in each candidate input, on `radvis synth` scenes of the rig's place rendered with the rig's
dca1000 cfg (every loop of its frame).

    .venv/bin/python -m bench.radar_input [--scenes 200] [--frames 10] [--epochs 12] [--splits 3]

Inputs: `raw0` (chirp 0, as ROD2021 stores it), `mti0` (chirp 0 minus the frame's mean chirp: the SDK's
clutterRemoval), `frame` (Doppler FFT over the loops, max-Doppler bin, mean chirp removed: radar.ra_chirp = -1),
and `mti:A,B,..` (those chirps, mean removed, stacked as learner.chirps). Per input: balanced 4-class test
accuracy over `--splits` sequence-level splits (split seeds 0..N-1; 20 % of the scenes test), mean ± std, and
the last split's confusion matrix (rows: true empty, pedestrian, cyclist, car). Scenes with two classes are
skipped. This measures the input, not self-supervision: the learnt encoder cannot exceed what is there.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

INPUTS = ("raw0", "mti0", "frame", "mti:0,1,2,3", "mti:0,4,8,12", "mti:0,16,32,48")


def render(scenes: int, frames: int, cfg: str) -> tuple[dict, np.ndarray, np.ndarray]:
    """{input: (N, 2C, 128, 128) float16}, labels (N,), scene index (N,)."""
    from threadpoolctl import threadpool_limits
    from drivers.ti import dsp
    from drivers.ti.cfg import parse_cfg
    from radvis.cruw import label_index
    from sim import render_radar
    from sim.scene import Scene
    from sim.synth import plan
    prof = parse_cfg(cfg).profile
    chirps = sorted({0} | {int(c) for name in INPUTS if name.startswith("mti:") for c in name[4:].split(",")})
    out: dict[str, list] = {"raw0": [], "frame": [], **{f"c{c}": [] for c in chirps}}
    y, s = [], []
    with threadpool_limits(1):
        for si, (_, kind, seed) in enumerate(plan(scenes, 5)):
            if kind == "mixed":
                continue
            sc = Scene(seed, scene_s=5.0, classes=(kind,))   # (the scene length the documented numbers used)
            for f in range(frames):
                st = sc.state(f * 0.3, kind=kind)
                adc = render_radar.render_adc(st, prof, rng=render_radar.frame_rng(seed, f))
                out["raw0"].append(dsp.ra_map(adc, prof, chirp=0))
                out["frame"].append(dsp.ra_map(adc, prof, chirp=None, clutter_removal=True))
                for c in chirps:
                    out[f"c{c}"].append(dsp.ra_map(adc, prof, chirp=c, clutter_removal=True))
                y.append(label_index(st.label))
                s.append(si)
    maps = {k: np.stack(v).astype(np.float16).transpose(0, 3, 1, 2) for k, v in out.items()}   # (N, 2, 128, 128)
    inputs = {"raw0": maps["raw0"], "mti0": maps["c0"], "frame": maps["frame"]}
    for name in INPUTS:
        if name.startswith("mti:"):
            inputs[name] = np.concatenate([maps[f"c{c}"] for c in name[4:].split(",")], axis=1)
    return inputs, np.array(y), np.array(s)


def supervised_accuracy(x: np.ndarray, y: np.ndarray, scene: np.ndarray, epochs: int, splits: int):
    import torch
    from learner.models import build_radar_encoder
    xt, yt = torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y)
    accs, cm = [], None
    for seed in range(splits):
        rng = np.random.default_rng(seed)
        seqs = np.unique(scene)
        rng.shuffle(seqs)
        test = np.isin(scene, seqs[: len(seqs) // 5])
        tr, te = np.flatnonzero(~test), np.flatnonzero(test)
        torch.manual_seed(seed)
        enc = build_radar_encoder("tiny", 4, chirps=x.shape[1] // 2)
        opt = torch.optim.Adam(enc.parameters(), 1e-3)
        for _ in range(epochs):
            enc.train()
            p = rng.permutation(tr)
            for b in range(0, len(p), 64):
                j = p[b:b + 64]
                loss = torch.nn.functional.cross_entropy(enc(xt[j]), yt[j])
                opt.zero_grad()
                loss.backward()
                opt.step()
        enc.eval()
        with torch.no_grad():
            pred = enc(xt[te]).argmax(1).numpy()
        accs.append(np.mean([np.mean(pred[y[te] == c] == c) for c in range(4) if np.any(y[te] == c)]))
        cm = [[int(np.sum((y[te] == a) & (pred == b))) for b in range(4)] for a in range(4)]
    return float(np.mean(accs)), float(np.std(accs)), cm


def main(argv=None) -> None:
    import torch
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenes", type=int, default=200)
    ap.add_argument("--frames", type=int, default=10, help="frames per scene, 0.3 s apart")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--splits", type=int, default=3)
    ap.add_argument("--cfg", default="drivers/ti/cfgs/radvis_iwr1843_dca.cfg")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.time()
    inputs, y, scene = render(a.scenes, a.frames, a.cfg)
    print(f"rendered {len(y)} frames of {len(np.unique(scene))} scenes in {time.time() - t0:.0f} s", flush=True)
    print("| radar input | 4-class accuracy (mean ± std over splits) | confusion (last split) |\n|---|---|---|")
    for name, x in inputs.items():
        m, sd, cm = supervised_accuracy(x, y, scene, a.epochs, a.splits)
        print(f"| {name} | {100 * m:.1f} ± {100 * sd:.1f} % | {cm} |", flush=True)


if __name__ == "__main__":
    main()
