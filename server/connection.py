"""One websocket connection of the native protocol: moves frames between the socket,
its sans-I/O `Session` and the shared `Batcher`.

A reader task feeds the session (pausing while too much audio waits for the engine or
too many messages wait for the client), engine futures complete the session's requests,
and a sender task writes the session's messages; errors become an error message and a
close code (`server.errors.to_error`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from .batcher import Batcher
from .errors import IdleTimeout, to_error
from .metrics import Metrics
from .protocol import Error, ServerMessage, encode
from .session import Session
from .settings import Settings

__all__ = ["SessionDriver", "limit_receive_buffers"]

log = logging.getLogger("tingxie.server")

OUTBOX_HIGH = 256  # queued outgoing messages before reading pauses (a client not reading)
# Receive buffer of accepted sockets (the kernel doubles it). While backpressure pauses
# reading, a client's keepalive ping waits behind what the buffers hold; autotuned
# buffers grow to tens of MB (minutes of audio, longer to decode than a client's ping
# timeout). 128 KiB is seconds of audio and far above any real-time stream's needs.
RECV_BUFFER_BYTES = 128 * 1024


def limit_receive_buffers(server: Any) -> None:
    """Accepted sockets inherit their listener's receive buffer size."""
    for sock in server.sockets:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER_BYTES)


class _Close:
    """Outbox marker: close the websocket with this code."""


    def __init__(self, code: int, reason: str = "") -> None:
        self.code = code
        self.reason = reason.encode("utf-8")[:120].decode("utf-8", "ignore")


class SessionDriver:
    """Moves frames between one websocket and its Session; submits the session's requests
    to the batcher. A reader task, a sender task and future callbacks, all on the loop."""

    def __init__(self, ws: ServerConnection, session: Session, batcher: Batcher, metrics: Metrics,
                 settings: Settings) -> None:
        self.ws = ws
        self.session = session
        self.batcher = batcher
        self.metrics = metrics
        self.settings = settings
        self.outbox: asyncio.Queue[str | _Close | None] = asyncio.Queue()
        self.progress = asyncio.Event()
        self.futures: set[asyncio.Future] = set()
        self.finished = False  # an error or the close has been queued
        self._audio_counted = 0.0
        self._reader: asyncio.Task | None = None

    async def run(self) -> None:
        self._reader = asyncio.create_task(self._read_loop())
        sender = asyncio.create_task(self._send_loop())
        try:
            await sender
        finally:
            self._reader.cancel()
            sender.cancel()
            for f in self.futures:
                f.cancel()
            self.session.abort()

    def shutdown(self) -> None:
        """Server shutdown: stop reading, flush what was received, close with 1001."""
        if self.finished or self.session.ending:
            return
        if self._reader is not None:
            self._reader.cancel()
        try:
            self.session.end(going_away=True)
        except Exception as e:  # noqa: BLE001 (mapped to an error message)
            self.fail(e)
            return
        self.pump()

    # -- input

    async def _read_loop(self) -> None:
        # Reading goes on after `end` (without an idle timeout: the client waits for its
        # finals), so that anything sent after it gets `unexpected_message`.
        s = self.session
        try:
            while not self.finished:
                while self._must_wait():
                    self.progress.clear()
                    await self.progress.wait()
                if self.finished:
                    break
                try:
                    async with asyncio.timeout(None if s.ending else self.settings.idle_timeout_s):
                        frame = await self.ws.recv()
                except TimeoutError:
                    self.fail(IdleTimeout(f"no message for {self.settings.idle_timeout_s:g} s"))
                    break
                if self.finished:
                    break
                try:
                    s.receive(frame)
                except Exception as e:  # noqa: BLE001 (mapped to an error message)
                    self.fail(e)
                    break
                self._count_audio()
                self.pump()
        except ConnectionClosed:
            self.outbox.put_nowait(None)  # the client is gone: stop the sender

    def _must_wait(self) -> bool:
        """Backpressure: stop reading while too much audio waits for the engine or too
        many messages wait for the client."""
        if self.finished:
            return False
        s = self.session
        if s.in_flight and s.backlog_s > self.settings.max_buffer_s:
            return True
        return self.outbox.qsize() > OUTBOX_HIGH

    def _count_audio(self) -> None:
        now = self.session.audio_seconds
        if now > self._audio_counted:
            self.metrics.audio.inc(now - self._audio_counted)
            self._audio_counted = now

    # -- engine

    def pump(self) -> None:
        """Submit the session's requests and queue its messages."""
        s = self.session
        for req in s.take_requests():
            fut = self.batcher.submit(req)
            self.futures.add(fut)
            fut.add_done_callback(functools.partial(self._on_done, req))
        for msg in s.take_messages():
            self._queue(msg)
        if s.close_code is not None and not self.finished:
            self.finished = True
            self.outbox.put_nowait(_Close(s.close_code, "server shutting down" if s.close_code == 1001 else ""))
        self.progress.set()

    def _on_done(self, req: Any, fut: asyncio.Future) -> None:
        self.futures.discard(fut)
        if fut.cancelled() or self.finished:
            return
        exc = fut.exception()
        try:
            if exc is not None:
                raise exc
            self.session.complete(req, fut.result())
        except Exception as e:  # noqa: BLE001 (mapped to an error message)
            self.fail(e)
            return
        self.pump()

    def fail(self, exc: BaseException) -> None:
        """Send the error message for `exc`, then close with its code."""
        if self.finished:
            return
        self.finished = True
        code, message, close_code = to_error(exc)
        if close_code == 1011:
            log.error("session %s: %s", self.session.id, exc, exc_info=exc)
        else:
            log.info("session %s: %s: %s", self.session.id, code, message)
        self.metrics.errors.labels(code=code).inc()
        self.session.abort()
        for f in self.futures:
            f.cancel()
        self._queue(Error(code, message))
        self.outbox.put_nowait(_Close(close_code, code))
        self.progress.set()

    # -- output

    def _queue(self, msg: ServerMessage) -> None:
        self.metrics.on_message(msg)
        self.outbox.put_nowait(encode(msg))

    async def _send_loop(self) -> None:
        try:
            while True:
                item = await self.outbox.get()
                if item is None:
                    return
                if isinstance(item, _Close):
                    await self.ws.close(item.code, item.reason)
                    return
                async with asyncio.timeout(self.settings.idle_timeout_s):
                    await self.ws.send(item)
                self.progress.set()
        except ConnectionClosed:
            return
        except TimeoutError:
            log.info("session %s: client not reading for %.0f s: dropping it", self.session.id, self.settings.idle_timeout_s)
            self.ws.transport.abort()
