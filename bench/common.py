"""Shared by the bench scripts: every script returns rows of {stage, metric, value, unit, baseline,
ratio, need}; `--json FILE` writes them as JSON lines (bench/run_all.py aggregates them into BENCHMARKS.md)."""
from __future__ import annotations

import json


def write_jsonl(path: str | None, rows: list[dict]) -> None:
    if not path:
        return
    with open(path, "w") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
