#!/usr/bin/env bash
# Idempotent setup used by `make demo` and `make test`: a .venv with the pinned dependencies, plus
# the one system library pyrealsense2 needs (libusb-1.0-0) and iproute2 for the two-host test, installed
# with apt-get when run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

if ! ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0'; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "bootstrap: installing libusb-1.0-0 (pyrealsense2 does not import without it)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libusb-1.0-0 >/dev/null
  else
    echo "bootstrap: libusb-1.0-0 is missing and this is not root; run: sudo apt-get install libusb-1.0-0" >&2
    exit 1
  fi
fi

# iproute2 (`ip`): tests/test_two_hosts.py joins two network namespaces with a veth pair to test the rig ->
# GPU box link for real; without root or `ip` that test skips (and says why), so its absence is not an error
if ! command -v ip >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "bootstrap: installing iproute2 (the two-host test needs \`ip netns\`)" >&2
    { DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 >/dev/null; } ||
      echo "bootstrap: installing iproute2 failed; tests/test_two_hosts.py will skip" >&2
  else
    echo "bootstrap: iproute2 is missing and this is not root; tests/test_two_hosts.py will skip" >&2
  fi
fi

"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "bootstrap: radvis needs Python >= 3.11 (found $("$PYTHON" --version 2>&1))" >&2; exit 1; }

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
stamp="$VENV/.radvis-deps"
want=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "bootstrap: installing dependencies into $VENV (torch==2.14.1, torchvision==0.29.1, ...)" >&2
  log="$VENV/pip-install.log"
  if ! { "$VENV/bin/python" -m pip install -q --upgrade pip && "$VENV/bin/python" -m pip install -q -e ".[dev]"; } >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "bootstrap: pip install failed; full log in $log" >&2
    exit 1
  fi
  echo "$want" > "$stamp"
fi
