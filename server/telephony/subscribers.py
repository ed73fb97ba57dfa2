"""Results for protocols without a reply path (Twilio forks, AudioSocket, hung-up
FreeSWITCH legs): a hub keyed by call id that fans events out to websocket subscribers
at `/v1/calls/{call_id}/events` and to an optional webhook.

Events are JSON objects: the native `partial` / `final` messages (docs/protocol.md) with
`call_id` and `role` (customer, agent, ...) added, plus `call_start`, `dtmf` and
`call_end`. A subscriber gets the events of the call so far (replayed), then live ones;
its socket is closed (1000) after `call_end`. Ended calls are kept for `keep_s` so a
late subscriber still gets the whole call. Publishing never blocks: a subscriber that
does not read is dropped once its queue is full.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import unquote

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

__all__ = ["EVENTS_PREFIX", "EVENTS_SUFFIX", "Hub", "call_id_from_path", "serve_subscriber"]

log = logging.getLogger("tingxie.telephony")

EVENTS_PREFIX = "/v1/calls/"
EVENTS_SUFFIX = "/events"
MAX_EVENTS_PER_CALL = 2000
MAX_CALLS_KEPT = 1000
SUBSCRIBER_QUEUE = 1000


def call_id_from_path(path: str) -> str | None:
    """`/v1/calls/{call_id}/events` -> call_id (None for other paths)."""
    if not (path.startswith(EVENTS_PREFIX) and path.endswith(EVENTS_SUFFIX)):
        return None
    cid = unquote(path[len(EVENTS_PREFIX) : -len(EVENTS_SUFFIX)])
    return cid if cid and "/" not in cid and len(cid) <= 200 else None


@dataclass(eq=False)
class _Call:
    events: collections.deque = field(default_factory=lambda: collections.deque(maxlen=MAX_EVENTS_PER_CALL))
    queues: set[asyncio.Queue] = field(default_factory=set)
    ended_at: float | None = None


class Hub:
    """Call id -> events. `sinks` (e.g. the webhook) get every event too."""

    def __init__(self, keep_s: float = 300.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._calls: dict[str, _Call] = {}
        self.live: set[str] = set()  # ids (and aliases) of calls in progress: never shared
        self.keep_s = keep_s
        self.sinks: list[Callable[[dict[str, Any]], None]] = []
        self._clock = clock

    def _call(self, call_id: str) -> _Call:
        call = self._calls.get(call_id)
        if call is None:
            self._expire()
            call = self._calls[call_id] = _Call()
        return call

    def _expire(self) -> None:
        now = self._clock()
        for cid in [c for c, v in self._calls.items() if v.ended_at is not None and now - v.ended_at > self.keep_s]:
            if not self._calls[cid].queues:
                del self._calls[cid]
        while len(self._calls) >= MAX_CALLS_KEPT:
            ended = [c for c, v in self._calls.items() if v.ended_at is not None and not v.queues]
            if not ended:
                break
            del self._calls[ended[0]]

    def publish(self, call_id: str, event: dict[str, Any]) -> None:
        event = {"call_id": call_id, **event}
        call = self._call(call_id)
        if event.get("type") == "call_start":
            call.ended_at = None  # a reused id starts afresh
            call.events.clear()
        call.events.append(event)
        if event.get("type") == "call_end":
            call.ended_at = self._clock()
        for q in list(call.queues):
            try:
                q.put_nowait(event)
            except asyncio.QueueFull:
                call.queues.discard(q)
                while not q.empty():
                    q.get_nowait()
                q.put_nowait({"type": "dropped", "call_id": call_id})
                log.warning("call %s: a subscriber is not reading: dropped", call_id)
        for sink in self.sinks:
            try:
                sink(event)
            except Exception:
                log.exception("call %s: event sink failed", call_id)

    def subscribe(self, call_id: str) -> tuple[asyncio.Queue, bool]:
        """A queue preloaded with the call's events so far, and whether it has ended."""
        call = self._call(call_id)
        q: asyncio.Queue = asyncio.Queue(SUBSCRIBER_QUEUE + MAX_EVENTS_PER_CALL)
        for e in call.events:
            q.put_nowait(e)
        call.queues.add(q)
        return q, call.ended_at is not None

    def unsubscribe(self, call_id: str, q: asyncio.Queue) -> None:
        call = self._calls.get(call_id)
        if call is not None:
            call.queues.discard(q)

    def ended(self, call_id: str) -> bool:
        call = self._calls.get(call_id)
        return call is not None and call.ended_at is not None


async def serve_subscriber(hub: Hub, ws: ServerConnection, call_id: str) -> None:
    """Send the call's events as JSON text frames until `call_end`, then close 1000.
    Text the subscriber sends is ignored."""
    q, _ = hub.subscribe(call_id)

    async def drain_input() -> None:
        async for _ in ws:
            pass

    reader = asyncio.create_task(drain_input())
    try:
        while True:
            getter = asyncio.ensure_future(q.get())
            done, _ = await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                return  # the subscriber left
            event = getter.result()
            if event.get("type") != "dropped":
                await ws.send(json.dumps(event, ensure_ascii=False, separators=(",", ":")))
            if event.get("type") == "dropped":
                await ws.close(1008, "subscriber too slow")
                return
            if event.get("type") == "call_end":
                await ws.close(1000)
                return
    except ConnectionClosed:
        return
    finally:
        reader.cancel()
        hub.unsubscribe(call_id, q)
