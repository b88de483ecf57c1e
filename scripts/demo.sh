#!/usr/bin/env bash
# The main job: the whole rig on emulated devices (TI radar via DCA1000 raw ADC, MJPEG camera, capture,
# sync, recorder, online learner) for rig.duration_s, then the learnt encoder's evaluation, the replay
# check, and the report path. Each run gets its own directory so nothing resumes by accident.
set -euo pipefail
cd "$(dirname "$0")/.."
run="runs/demo-$(date +%Y%m%d-%H%M%S)"
exec .venv/bin/python -m radvis rig --set "rig.run_dir='$run'" "$@"
