"""A recorded session of `pair` messages, written without a rig: what `radvis record` stores on the
`pairs` channel of a live rig, made from the deterministic `bench.online.SyntheticStream`. `radvis replay
SESSION --rate R` then publishes it on `endpoints.pairs` as a live `radvis sync` would, which is how
`bench/gpu.py`, the several-rigs test and the two-host test feed a learner a pair stream at a known rate.

    .venv/bin/python -m bench.pair_session OUT.mcap --pairs 600 --seed 3 --source rig-a
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

T0_NS = 1_700_000_000 * 10**9   # recorded log times start here (any fixed instant)


def write_pair_session(path: str | Path, n: int, *, seed: int = 0, source: str = "sync0", fps: float = 10.0,
                       epoch: int = 7, image_hw: tuple[int, int] = (96, 128), jpeg: bool = False) -> dict:
    """Write `n` pairs at `fps` (pair i recorded at i / fps s) into one MCAP segment at `path`. All pairs
    carry `source` and `epoch` (as one run of one `radvis sync` would) and seq 0..n-1; truth (label,
    scene) rides in the radar frame's meta, as in sessions recorded before truth had its own topic."""
    from bench.online import SyntheticStream
    from capture.record import Segment, frame
    from radvis.wire import encode
    stream = SyntheticStream(seed=seed, fps=fps, image_hw=tuple(image_hw))
    seg = Segment(Path(path), compression="none", chunk_bytes=1 << 22)
    nbytes = 0
    for i in range(n):
        m = stream.message(i, jpeg=jpeg)
        m.source, m.seq, m.epoch = source, i, epoch
        m.t_mono_ns = m.t_wall_ns = T0_NS + int(i * 1e9 / fps)
        d = frame(encode(m))
        nbytes += len(d)
        seg.add("pairs", d, log_time=T0_NS + int(i * 1e9 / fps), publish_time=0, sequence=i)
    seg.close()
    return {"path": str(path), "pairs": n, "fps": fps, "span_s": (n - 1) / fps, "source": source, "epoch": epoch,
            "bytes": nbytes}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.pair_session", description=__doc__.split("\n\n")[0])
    ap.add_argument("out", help="the .mcap file to write")
    ap.add_argument("--pairs", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--source", default="sync0")
    ap.add_argument("--fps", type=float, default=10.0)
    ap.add_argument("--epoch", type=int, default=7)
    ap.add_argument("--image-size", default="128x96", help="WIDTHxHEIGHT")
    ap.add_argument("--jpeg", action="store_true")
    a = ap.parse_args(argv)
    w, h = (int(v) for v in a.image_size.lower().split("x"))
    print(json.dumps(write_pair_session(a.out, a.pairs, seed=a.seed, source=a.source, fps=a.fps, epoch=a.epoch,
                                        image_hw=(h, w), jpeg=a.jpeg)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
