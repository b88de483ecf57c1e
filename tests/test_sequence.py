"""radvis.sequence.SeqTracker: the one sequence accounting every Subscriber (sync, recorder, learner,
tools) uses: gaps, stale duplicates, restarts, replay rewinds, suspect jumps, bounded memory."""
from radvis.sequence import SEQ_JUMP, STALE, SeqTracker


def run(t: SeqTracker, items, source="sync0", epoch=11, replay=False):
    return [t.update(source, epoch, kind, seq, replay) for kind, seq in items]


def test_gaps_follow_each_kinds_counter():
    # a synchroniser numbers pairs and drop events separately: pairs 0, 1, 4 (2, 3 lost), events 0, 1
    t = SeqTracker()
    out = run(t, [("pair", 0), ("event", 0), ("pair", 1), ("event", 1), ("pair", 4), ("pair", 4)])
    assert out == [(None, 0)] * 4 + [(None, 2), (STALE, 0)]
    assert t.lost == 2 and t.restarts == 0
    assert run(t, [("pair", 0)], epoch=12) == [(None, 0)]  # publisher restarted: no gap, a restart
    assert t.lost == 2 and t.restarts == 1
    assert run(t, [("event", 0)], epoch=12) == [(None, 0)]  # its other kind: not another restart
    assert t.restarts == 1


def test_stale_live_messages_are_dropped_replay_rewinds_are_not():
    t = SeqTracker()
    assert run(t, [("radar", k) for k in range(20)]) == [(None, 0)] * 20
    assert run(t, [("radar", 10), ("radar", 19), ("radar", 0)]) == [(STALE, 0)] * 3
    assert run(t, [("radar", 20)]) == [(None, 0)] and t.lost == 0
    # the same recording replayed again (replay=true, same epoch, from the start): a rewind
    t2 = SeqTracker()
    run(t2, [("radar", k) for k in range(5)], replay=True)
    assert run(t2, [("radar", k) for k in range(5)], replay=True) == [(None, 0)] * 5
    assert t2.restarts == 1 and t2.lost == 0


def test_one_corrupt_seq_far_ahead_costs_one_message_not_the_stream():
    t = SeqTracker()
    run(t, [("radar", k) for k in range(10)])
    assert run(t, [("radar", 2**64 - 1)]) == [(SEQ_JUMP, 0)]
    assert run(t, [("radar", k) for k in range(10, 15)]) == [(None, 0)] * 5  # the stream goes on
    assert t.lost == 0
    # a real jump that far (a subscriber away for days) is confirmed by the next message
    big = 14 + SeqTracker.MAX_JUMP + 100
    assert run(t, [("radar", big), ("radar", big + 1), ("radar", big + 2)]) == [(SEQ_JUMP, 0), (None, big - 15), (None, 0)]
    assert t.lost == big - 15
    # a jump within MAX_JUMP is a plain gap
    assert run(t, [("radar", big + 1000)]) == [(None, 997)]


def test_memory_is_bounded_and_streams_in_use_are_kept():
    t = SeqTracker()
    run(t, [("radar", 0)], source="radar0", epoch=1)
    for i in range(10 * SeqTracker.MAX_STREAMS):  # a flood of made-up sources and epochs
        t.update(f"x{i}", i, "radar", 0)
        if i % 50 == 0:
            assert t.update("radar0", 1, "radar", 1 + i // 50) == (None, 0)  # in use: never forgotten
    assert len(t.streams) <= SeqTracker.MAX_STREAMS and len(t.epochs) <= SeqTracker.MAX_STREAMS
    for i in range(100):
        t.update("radar0", 1000 + i, "radar", 0)  # one source, many epochs
    assert all(len(e) <= SeqTracker.MAX_EPOCHS for e in t.epochs.values())
