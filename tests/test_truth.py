"""The truth message and its join (radvis/truth.py): what consumers rely on."""
from __future__ import annotations

import numpy as np
import pytest

from radvis.truth import TruthJoin, truth_message
from radvis.wire import Limits, Message, decode, encode


def test_truth_message_is_plain_json_on_the_wire():
    m = truth_message("camera", "camera0", 12, 5_000_000_000, {"label": "car", "scene_id": np.int64(3),
                      "objects": [{"cls": "car", "range_m": np.float32(7.5)}], "frame_number": 99})
    back = decode(encode(m), Limits())
    assert (back.kind, back.topic or "truth", back.source) == ("truth", "truth", "camera0") and not back.buffers
    assert back.meta == {"label": "car", "scene_id": 3, "objects": [{"cls": "car", "range_m": 7.5}],
                         "stream": "camera", "frame_number": 12, "t_capture_ns": 5_000_000_000}
    with pytest.raises(ValueError, match="truth stream must be one of"):
        truth_message("lidar", "x", 1, 1, {})


def test_join_is_bounded_checks_capture_time_and_counts_malformed():
    j = TruthJoin(capacity=3, max_lag_s=1.0)
    for fn in range(5):
        assert j.add(truth_message("radar", "radar0", fn, 1_000_000_000 + fn, {"label": "car"}))
    assert len(j.map) == 3 and j.get("radar0", 0) is None and j.get("radar0", 4)["frame_number"] == 4
    assert j.get("radar0", 4, t_arrival_ns=1_500_000_004) is not None       # arrived 0.5 s after capture
    assert j.get("radar0", 4, t_arrival_ns=2_500_000_004) is None           # 1.5 s: another frame's truth
    assert j.get("radar0", 4, t_arrival_ns=999_999_999) is None             # before its capture: impossible
    assert j.get("camera0", 4) is None and j.get("radar0", True) is None
    assert not j.add(Message(kind="truth", source="radar0", meta={"frame_number": "7"}))
    assert not j.add(Message(kind="radar", source="radar0", meta={"frame_number": 7, "t_capture_ns": 1}))
    assert j.malformed == 2 and j.added == 5 and j.seen == {"radar0"}
