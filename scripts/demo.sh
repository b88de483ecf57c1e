#!/usr/bin/env bash
# The main job: the whole rig on emulated devices (TI radar via DCA1000 raw ADC, MJPEG camera, capture,
# sync, recorder, online learner) for rig.duration_s, then the learnt encoder's evaluation, the replay
# check, and the report path. Each run gets its own directory so nothing resumes by accident.
# Each run keeps ~3 GB (recording 1.7 GB, held-out set 1.0 GB, checkpoints; four chirps per radar frame): the newest RADVIS_KEEP_DEMOS finished
# runs (default 5; 0 = all) are kept and older runs/demo-* removed first (rig/prune.py). Rename a run
# to keep it.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m rig.prune runs --prefix demo- --keep "${RADVIS_KEEP_DEMOS:-5}"
run="runs/demo-$(date +%Y%m%d-%H%M%S)"
exec .venv/bin/python -m radvis rig --set "rig.run_dir='$run'" "$@"
