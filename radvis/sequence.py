"""Sequence accounting for wire messages: the one place radvis decides whether a received message is
next in its stream, follows a gap, or is stale (docs/wire-format.md "Sequence numbers, gaps, restarts").
Every Subscriber owns one tracker, so sync, the recorder, the learner and every tool count alike.

A Publisher numbers each kind of message it sends from 0 within a random epoch, so a stream is
(source, epoch, kind):
- seq = last + 1 is next; seq = last + 1 + n means n messages were lost upstream (`lost`);
- seq <= last is stale: a duplicate, or a message older than one already delivered. Live it is dropped
  (`stale`), so no consumer ever sees a message twice: sync would read its old stamp as a time jump
  and pair it again, the learner would train on it twice, the recorder would store it twice.
  A replayed stream (replay=true) counting again from an earlier seq in the same epoch is the same
  recording played once more: a rewind, delivered and counted in `restarts`;
- a jump of more than MAX_JUMP ahead (seq 2^64-1 in a stream at 10) is suspect: that message is
  dropped (`seq_jump`) unless the next one continues from it, which proves the jump real. Otherwise one
  corrupt seq would make every later message of the stream stale: one bad message would cost the stream;
- the first message of a new epoch from a known source is a restart (`restarts`), not a gap.

Memory is bounded whatever arrives: streams and sources are LRUs of MAX_STREAMS entries, so a flood of
made-up sources or epochs forgets the oldest, never the streams in use.
"""
from __future__ import annotations

from collections import OrderedDict

STALE, SEQ_JUMP = "stale", "seq_jump"  # drop reasons (counted by the caller in rejected[reason])


class SeqTracker:
    MAX_STREAMS = 256
    MAX_JUMP = 1 << 20  # ~1M messages: a day of 10 Hz frames; larger forward jumps need one confirmation
    MAX_EPOCHS = 8  # epochs remembered per source (a publisher's other kinds start without a restart)

    def __init__(self):
        # (source, epoch, kind) -> {"last": seq, "lost": n, "epoch": e, "suspect": seq | None}
        self.streams: OrderedDict = OrderedDict()
        self.epochs: OrderedDict = OrderedDict()  # source -> OrderedDict of its recent epochs
        self.lost = 0  # messages missing from sequence gaps, all streams
        self.restarts = 0  # new epochs of known sources, and replay rewinds

    def update(self, source: str, epoch: int, kind: str, seq: int, replay: bool = False) -> tuple[str | None, int]:
        """(drop reason or None, messages lost just before this one). A message with a drop reason
        must not be delivered."""
        key = (source, epoch, kind)
        st = self.streams.get(key)
        if st is None:
            self._new_stream(key, seq)
            return None, 0
        self.streams.move_to_end(key)
        last = st["last"]
        if seq <= last:
            if replay:  # the recording played again
                st["last"], st["suspect"] = seq, None
                self.restarts += 1
                return None, 0
            return STALE, 0
        gap = seq - last - 1
        if gap > self.MAX_JUMP:
            sus = st["suspect"]
            if sus is None or seq != sus + 1:
                st["suspect"] = seq
                return SEQ_JUMP, 0
            gap = sus - last - 1  # confirmed: the suspect itself was dropped (counted as seq_jump)
        st["last"], st["suspect"] = seq, None
        st["lost"] += gap
        self.lost += gap
        return None, gap

    def _new_stream(self, key: tuple, seq: int) -> None:
        source, epoch, _ = key
        seen = self.epochs.get(source)
        if seen is None:
            seen = self.epochs[source] = OrderedDict()
            if len(self.epochs) > self.MAX_STREAMS:
                self.epochs.popitem(last=False)
        elif epoch not in seen:
            self.restarts += 1
        seen[epoch] = True
        seen.move_to_end(epoch)
        self.epochs.move_to_end(source)
        if len(seen) > self.MAX_EPOCHS:
            seen.popitem(last=False)
        self.streams[key] = {"last": seq, "lost": 0, "epoch": epoch, "suspect": None}
        if len(self.streams) > self.MAX_STREAMS:
            self.streams.popitem(last=False)
