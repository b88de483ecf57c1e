"""Keep the newest N finished demo runs; remove the older ones.

Every `make demo` writes a fresh `runs/demo-<time>/` with its MCAP recording (~0.5 GB), held-out set (~0.25
GB) and learner checkpoints (~0.1 GB). Nothing else removes them, and a machine that runs the demo a few
dozen times fills its disk. `scripts/demo.sh` calls this before each run with `RADVIS_KEEP_DEMOS` (default
5; 0 keeps everything).

Only finished runs count and go: a directory named `<prefix><something>` that holds the `rig-report.md`
the rig writes at the end. A run in progress, a crashed one, and anything renamed (`mv runs/demo-X
runs/keep-X`) are never touched. Newest = latest name, which for `demo-YYYYmmdd-HHMMSS` is the start time.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

REPORT = "rig-report.md"


def finished_runs(parent: Path, prefix: str) -> list[Path]:
    """Finished runs under `parent` named `prefix*`, oldest first."""
    if not parent.is_dir():
        return []
    return sorted(p for p in parent.iterdir()
                  if p.name.startswith(prefix) and p.is_dir() and not p.is_symlink() and (p / REPORT).is_file())


def stale_runs(parent: Path, prefix: str, keep: int) -> list[Path]:
    """The finished runs beyond the newest `keep` (keep <= 0: none), oldest first."""
    return finished_runs(parent, prefix)[:-keep] if keep > 0 else []


def prune_runs(parent: Path, prefix: str, keep: int) -> list[Path]:
    """Remove all but the newest `keep` finished runs (keep <= 0: remove nothing). Returns what was removed."""
    old = stale_runs(parent, prefix, keep)
    for p in old:
        shutil.rmtree(p)
    return old


def _size_mb(p: Path) -> float:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file() and not f.is_symlink()) / 1e6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rig.prune", description=__doc__.splitlines()[0])
    ap.add_argument("parent", type=Path, help="directory holding the runs (runs/)")
    ap.add_argument("--prefix", default="demo-", help="run directory name prefix (default demo-)")
    ap.add_argument("--keep", type=int, default=5, help="newest finished runs to keep (0 = keep all)")
    a = ap.parse_args(argv)
    sizes = {p: _size_mb(p) for p in stale_runs(a.parent, a.prefix, a.keep)}   # only what goes: kept runs are not walked
    removed = prune_runs(a.parent, a.prefix, a.keep)
    if removed:
        freed = sum(sizes.get(p, 0.0) for p in removed)
        print(f"prune: removed {len(removed)} old run(s) under {a.parent}/ ({freed / 1e3:.1f} GB), kept the newest "
              f"{a.keep} finished {a.prefix}* runs: " + ", ".join(p.name for p in removed), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
