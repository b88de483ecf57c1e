"""A minimal Foxglove WebSocket protocol client for tests (subprotocol foxglove.sdk.v1, the SDK server's): the
JSON control messages (serverInfo, advertise, unadvertise, subscribe) and binary message data (opcode 1:
u32 subscription id, u64 log time, payload), decoded with the schema each channel advertised."""
from __future__ import annotations

import base64
import json
import struct
import time

from websockets.sync.client import connect

from capture.foxglove import decode

SUBPROTOCOL = "foxglove.sdk.v1"
OP_MESSAGE_DATA = 1


class FoxgloveClient:
    def __init__(self, url: str, open_timeout: float = 20.0):
        self.ws = connect(url, subprotocols=[SUBPROTOCOL], open_timeout=open_timeout, max_size=None,
                          legacy=True)  # a plain connection object (no context manager)
        assert self.ws.subprotocol == SUBPROTOCOL
        self.server_info: dict | None = None
        self.channels: dict[int, dict] = {}  # channel id -> advertised channel
        self.subs: dict[int, dict] = {}  # subscription id -> channel
        self.next_sub = 1

    def close(self) -> None:
        self.ws.close()

    def by_topic(self) -> dict[str, dict]:
        return {c["topic"]: c for c in self.channels.values()}

    def _control(self, text: str) -> None:
        j = json.loads(text)
        if j["op"] == "serverInfo":
            self.server_info = j
        elif j["op"] == "advertise":
            for c in j["channels"]:
                self.channels[c["id"]] = c
        elif j["op"] == "unadvertise":
            for cid in j["channelIds"]:
                self.channels.pop(cid, None)

    def wait_channels(self, topics, timeout: float = 30.0) -> dict[str, dict]:
        deadline = time.monotonic() + timeout
        while not set(topics) <= set(self.by_topic()):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"channels {sorted(set(topics) - set(self.by_topic()))} never advertised; "
                                     f"have {sorted(self.by_topic())}")
            try:
                m = self.ws.recv(timeout=left)
            except TimeoutError:
                continue
            if isinstance(m, str):
                self._control(m)
        return self.by_topic()

    def subscribe(self, topics) -> None:
        chans = self.wait_channels(topics)
        subs = []
        for t in topics:
            sid, self.next_sub = self.next_sub, self.next_sub + 1
            self.subs[sid] = chans[t]
            subs.append({"id": sid, "channelId": chans[t]["id"]})
        self.ws.send(json.dumps({"op": "subscribe", "subscriptions": subs}))

    def recv(self, timeout: float) -> tuple[str, object, int] | None:
        """Next message on a subscription: (topic, decoded message, log time ns); None on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                m = self.ws.recv(timeout=left)
            except TimeoutError:
                return None
            if isinstance(m, str):
                self._control(m)
                continue
            if m[0] != OP_MESSAGE_DATA:
                continue
            sid, log_time = struct.unpack_from("<IQ", m, 1)
            ch = self.subs[sid]
            enc = ch.get("schemaEncoding") or ""
            sch = ch["schema"]
            data = base64.b64decode(sch) if enc == "protobuf" else sch.encode()
            return ch["topic"], decode(ch["schemaName"], enc, data, ch["encoding"], m[13:]), log_time
