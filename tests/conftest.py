"""Shared test helpers. Real captures live in ../shared/fixtures (beside the repository in CI);
tests that need them skip with a clear reason when it is absent (a user's fresh clone)."""
from __future__ import annotations

import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("RADVIS_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared_fixtures() -> Path:
    d = SHARED / "fixtures"
    if not d.is_dir():
        pytest.skip(f"real captures not available: {d} is absent (CI has ../shared beside the repository; "
                    "set RADVIS_SHARED to point elsewhere)")
    return d


@pytest.fixture(autouse=True, scope="session")
def _few_threads():
    # 2-core machines: keep torch from oversubscribing when tests run alongside other processes
    try:
        import torch
        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    except ImportError:
        pass


_TAG = "RADVIS_TEST_TAG"
_tags = itertools.count()


def _tagged_pids(tag: str) -> list[int]:
    """Processes whose environment carries `_TAG=tag` (inherited: every descendant keeps it, orphans too)."""
    want, out = f"{_TAG}={tag}".encode(), []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            if want in (d / "environ").read_bytes().split(b"\0"):
                out.append(int(d.name))
        except OSError:      # gone, or not ours to read
            pass
    return out


@pytest.fixture(autouse=True)
def _no_leftover_processes():
    """Kill what a test leaves running. The processes a test starts inherit a per-test tag in their
    environment, and so do their children; whatever still runs after the test's own teardown is killed.
    Why: daemons are started in their own session (`start_new_session`), so a test that fails or times out
    before its cleanup, or that kill -9s a supervisor, leaves them running: on a busy 2-core machine they
    starve the tests after it and hold their sockets. Module- and session-scoped fixtures are set up before
    this fixture tags the environment, so their processes are never touched."""
    if not Path("/proc/self/environ").exists():     # not Linux: nothing to scan
        yield
        return
    tag = f"{os.getpid()}.{next(_tags)}"
    os.environ[_TAG] = tag
    try:
        yield
    finally:
        os.environ.pop(_TAG, None)
        left = _tagged_pids(tag)
        for pid in left:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        if left:
            print(f"conftest: killed {len(left)} process(es) the test left running: {left}", file=sys.stderr)


@pytest.fixture
def one_torch_thread():
    """One intra-op torch thread for a test (`pytestmark = pytest.mark.usefixtures("one_torch_thread")`): on a
    shared 2-core machine two threads spin against other jobs (and the test's own learner, receiver and feeder
    threads); one is steadier, often faster, and deterministic."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def episode_frames(scene, cam, episode: int, kind: str, n: int, dt: float, objects_of: int | None = None) -> np.ndarray:
    """n camera frames of `scene`'s episode (its walls, poles, light), `dt` s apart; with `objects_of`, the
    moving objects of that other episode (same kind) are put into this place instead."""
    import dataclasses
    from sim.render_camera import frame_rng, render
    out = []
    for i in range(n):
        st = scene.state(episode * scene.scene_s + dt * i, kind)
        if objects_of is not None:
            st = dataclasses.replace(st, objects=scene.state(objects_of * scene.scene_s + dt * i, kind).objects)
        out.append(render(st, cam, rng=frame_rng(episode, i)))
    return np.stack(out)


def free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rig_sets(tmp: Path) -> list[str]:
    """`--set` arguments for a whole emulated rig in a test: every endpoint on ipc:// in tmp, the emulated
    devices on free ports, the DCA1000 link on a private pair of loopback addresses (host .1, board .2, with the
    board's real port numbers), and pairing from the first frame (tests are not about the clock models'
    warm-up, docs/sync.md)."""
    out = []
    for name in ("radar", "camera", "pairs", "truth", "control", "view_stats"):
        out += ["--set", f"endpoints.{name}='ipc://{tmp}/{name}.sock'"]
    a, b = (int(x) for x in np.random.default_rng().integers(1, 250, 2))
    out += ["--set", f"radar.cli_port='socket://127.0.0.1:{free_port()}'",
            "--set", f"radar.data_port='socket://127.0.0.1:{free_port()}'",
            "--set", f"radar.dca_host='127.{a}.{b}.1'", "--set", f"radar.dca_board='127.{a}.{b}.2'",
            "--set", f"camera.url='http://127.0.0.1:{free_port()}/?action=stream'"]
    return out + ["--set", "sync.clock_warmup_s=0"]


def start_radvis(tmp: Path, name: str, args: list[str]) -> subprocess.Popen:
    """A `radvis` process logging to tmp/NAME.log (a file, not a pipe: a chatty daemon never blocks)."""
    log = open(tmp / f"{name}.log", "wb")
    return subprocess.Popen([sys.executable, "-m", "radvis", *args], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"), start_new_session=True)


def stop_radvis(p: subprocess.Popen, timeout: float = 20) -> int:
    """SIGTERM (a clean stop), then its exit code; SIGKILL to its process group after `timeout`."""
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
    try:
        return p.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        return p.wait()
