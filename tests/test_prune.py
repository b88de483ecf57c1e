"""rig/prune.py, what scripts/demo.sh calls before each run: old finished demo runs go, nothing else does."""
import subprocess
import sys
from pathlib import Path

from rig.prune import REPORT, prune_runs

REPO = Path(__file__).resolve().parents[1]


def _run(parent: Path, name: str, finished: bool = True, mb: int = 1) -> Path:
    d = parent / name
    (d / "session").mkdir(parents=True)
    (d / "session" / "radvis-0000.mcap").write_bytes(b"\0" * (mb * 1_000_000))
    if finished:
        (d / REPORT).write_text("# radvis rig run\n")
    return d


def test_keeps_the_newest_finished_runs_and_leaves_everything_else(tmp_path):
    finished = [_run(tmp_path, f"demo-20261204-0{i}0000") for i in range(1, 6)]
    crashed = _run(tmp_path, "demo-20261204-000000", finished=False)     # oldest, but no report: kept
    running = _run(tmp_path, "demo-20261204-090000", finished=False)     # newest, in progress: kept
    renamed = _run(tmp_path, "keep-20261204-000001")                     # renamed by the user: kept
    (tmp_path / "demo-notes.txt").write_text("a file, not a run")
    removed = prune_runs(tmp_path, "demo-", keep=2)
    assert removed == finished[:3]                                       # oldest first, by name (= start time)
    assert [p.exists() for p in finished] == [False, False, False, True, True]
    assert crashed.exists() and running.exists() and renamed.exists() and (tmp_path / "demo-notes.txt").exists()
    assert prune_runs(tmp_path, "demo-", keep=2) == []                   # nothing more to do


def test_keep_zero_keeps_all_and_a_missing_parent_is_no_error(tmp_path):
    runs = [_run(tmp_path, f"demo-2026120{i}-000000") for i in range(1, 4)]
    assert prune_runs(tmp_path, "demo-", keep=0) == []
    assert all(p.exists() for p in runs)
    assert prune_runs(tmp_path / "absent", "demo-", keep=1) == []


def test_the_command_line_says_what_it_removed_and_how_much(tmp_path):
    for i in range(1, 4):
        _run(tmp_path, f"demo-2026120{i}-000000", mb=2)
    p = subprocess.run([sys.executable, "-m", "rig.prune", str(tmp_path), "--keep", "1"], cwd=REPO,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "removed 2 old run(s)" in p.stderr and "(0.0 GB)" in p.stderr
    assert "demo-20261201-000000, demo-20261202-000000" in p.stderr
    assert sorted(x.name for x in tmp_path.iterdir()) == ["demo-20261203-000000"]


def test_demo_script_prunes_then_starts_a_fresh_run(tmp_path):
    """scripts/demo.sh for real, in a copy of the repository layout whose .venv/bin/python runs rig.prune
    with this interpreter and stands in for `radvis rig` by printing its arguments."""
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "demo.sh").write_text((REPO / "scripts" / "demo.sh").read_text())
    py = tmp_path / ".venv" / "bin" / "python"
    py.parent.mkdir(parents=True)
    py.write_text(f"#!/bin/sh\nif [ \"$2\" = rig.prune ]; then PYTHONPATH={REPO} exec {sys.executable} \"$@\"; fi\n"
                  "echo \"rig args: $*\"\n")
    py.chmod(0o755)
    for i in range(1, 5):
        _run(tmp_path / "runs", f"demo-2026120{i}-000000")
    p = subprocess.run(["bash", str(tmp_path / "scripts" / "demo.sh"), "--set", "rig.duration_s=1"],
                       capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "RADVIS_KEEP_DEMOS": "2"})
    assert p.returncode == 0, p.stderr
    assert sorted(x.name for x in (tmp_path / "runs").iterdir()) == ["demo-20261203-000000", "demo-20261204-000000"]
    assert "removed 2 old run(s)" in p.stderr
    assert "rig args: -m radvis rig --set rig.run_dir='runs/demo-" in p.stdout and "rig.duration_s=1" in p.stdout
