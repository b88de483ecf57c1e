"""`make gpu-check` in CI: bench/gpu.py in tiny CPU mode runs every stage of the GPU box's path (offline
pretraining through the prefetching loader, DDP on gloo vs one process with the doubled batch, the online
learner on a replayed session) and prints one table; it exits 0 only when every check passes."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_gpu_check_runs_in_tiny_cpu_mode(tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-m", "bench.gpu", "--tiny", "--out", str(tmp_path / "work")], cwd=REPO,
                       env=env, capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    table = [line for line in r.stdout.splitlines() if line.startswith("| ") and not line.startswith("| check")]
    assert len(table) == 4 and all(line.endswith("| yes |") for line in table), r.stdout
    text = "\n".join(table)
    assert "queue identical" in text and "(gloo)" in text
    assert "48/48 pairs, dropped 0" in text and "GPU util n/a" in text
    assert "gpu-check: PASS" in r.stdout
