"""Shared test helpers. Real captures live in ../shared/fixtures (beside the repository in CI);
tests that need them skip with a clear reason when it is absent (a user's fresh clone)."""
from __future__ import annotations

import os
from pathlib import Path

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
