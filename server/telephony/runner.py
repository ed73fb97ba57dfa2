"""A socket-free driver for one `Session`: the adapters (call-center and compatibility
protocols) feed it audio bytes and get the session's messages through a callback.

It does what `server.connection.SessionDriver` does between a websocket and a session, minus the
socket: submit the session's engine requests to the shared batcher, report outcomes,
and hand every produced message (`Ready`, `Partial`, `Final`, `Done`, `Error`) to
`on_message`. Protocol and session logic stay in `Session`; nothing is forked here.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from typing import Any, Callable

from ..errors import to_error
from ..protocol import Error, ServerMessage
from ..session import Session

__all__ = ["SessionRunner"]

log = logging.getLogger("tingxie.telephony")


class SessionRunner:
    """One audio stream (one or two interleaved channels) of one call.

    fmt: the audio format as the native start message has it (`sample_rate`,
    `encoding`, `channels`). on_message: called on the event loop for every message.
    """

    def __init__(self, app: Any, session_id: str, fmt: dict[str, Any], on_message: Callable[[ServerMessage], None]) -> None:
        self.app = app
        self.on_message = on_message
        self.session = Session(session_id, app.session_config, app._new_stream, None, app._new_vad,
                               getattr(app, "text", None))
        self.finished = asyncio.Event()
        self.progress = asyncio.Event()
        self.failed: tuple[str, str] | None = None
        self._futures: set[asyncio.Future] = set()
        self._safe(lambda: self.session.receive(json.dumps({"type": "start", **fmt})))

    # ------------------------------------------------------------------ input

    def feed(self, data: bytes) -> None:
        """Audio bytes in the configured format (any split)."""
        if data and not self.done:
            self._safe(lambda: self.session.receive(bytes(data)))

    def end(self) -> None:
        """No more audio: decode what was received and produce the last finals.
        A partial sample frame left over (a hang-up mid-frame) is dropped."""
        if not self.done and not self.session.ending:
            self._safe(lambda: self.session.end(going_away=True))

    @property
    def done(self) -> bool:
        return self.finished.is_set()

    @property
    def busy(self) -> bool:
        """Engine work is in flight (the audio fed so far is not fully decoded)."""
        return self.session.in_flight > 0

    @property
    def audio_seconds(self) -> float:
        return self.session.audio_seconds

    async def wait_capacity(self) -> None:
        """Backpressure: wait while too much received audio waits for the engine."""
        limit = self.app.settings.max_buffer_s
        while not self.done and self.session.in_flight and self.session.backlog_s > limit:
            self.progress.clear()
            await self.progress.wait()

    async def wait_idle(self) -> None:
        """Until no engine work is in flight (lockstep protocols reply after this)."""
        while not self.done and self.busy:
            self.progress.clear()
            await self.progress.wait()

    async def wait(self, timeout: float | None = None) -> None:
        """Until the session produced `done` (or failed)."""
        async with asyncio.timeout(timeout):
            await self.finished.wait()

    def abort(self) -> None:
        for f in list(self._futures):
            f.cancel()
        self.session.abort()
        self.finished.set()
        self.progress.set()

    # ------------------------------------------------------------------ engine

    def _safe(self, action: Callable[[], None]) -> None:
        try:
            action()
        except Exception as e:  # noqa: BLE001 (mapped to an error message)
            self._fail(e)
            return
        self._pump()

    def _pump(self) -> None:
        s = self.session
        for req in s.take_requests():
            fut = self.app.batcher.submit(req)
            self._futures.add(fut)
            fut.add_done_callback(functools.partial(self._on_done, req))
        for msg in s.take_messages():
            self._emit(msg)
        if s.close_code is not None:
            self.finished.set()
        self.progress.set()

    def _on_done(self, req: Any, fut: asyncio.Future) -> None:
        self._futures.discard(fut)
        if fut.cancelled() or self.done:
            return
        exc = fut.exception()
        if exc is not None:
            self._fail(exc)
            return
        self._safe(lambda: self.session.complete(req, fut.result()))

    def _fail(self, exc: BaseException) -> None:
        if self.done:
            return
        code, message, _ = to_error(exc)
        if code == "internal_error":
            log.error("session %s: %s", self.session.id, exc, exc_info=exc)
        self.failed = (code, message)
        self.app.metrics.errors.labels(code=code).inc()
        self.abort()
        self._emit(Error(code, message))

    def _emit(self, msg: ServerMessage) -> None:
        self.app.metrics.on_message(msg)
        try:
            self.on_message(msg)
        except Exception:  # an adapter bug must not stop decoding
            log.exception("session %s: message handler failed", self.session.id)
