"""One port for the websocket protocols and the HTTP API.

websockets' HTTP parser refuses a request with a body before `process_request` sees it,
so an upload (`POST /v1/audio/transcriptions`) cannot go through websockets. Each
connection on the main port therefore reads its request line first: a request for one
of the HTTP API's paths is handed, with its transport and the bytes read so far, to
aiohttp's request handler; any other request (websocket upgrades, the page, `/healthz`,
`/metrics`) goes on to websockets as if it had arrived there directly. Both libraries
are asyncio protocols, so the hand-over is asyncio's protocol switching
(`transport.set_protocol`): nothing is proxied or copied.

`SharedPortConnection` is the `create_connection` class given to `websockets.serve`:
it defers websockets' `connection_made` (which starts the handshake) until the request
line says the connection is websockets'.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from websockets.asyncio.server import ServerConnection

__all__ = ["SharedPortConnection", "is_http_api_request"]

API_PATHS = (b"/v1/audio/", b"/v1/models")  # what aiohttp serves; everything else is websockets'
MAX_REQUEST_LINE = 8192  # websockets refuses longer lines itself, with 400
HEAD_TIMEOUT_S = 10.0  # a connection that sends no request line in time is dropped (websockets' open_timeout)


def is_http_api_request(request_line: bytes) -> bool:
    """Whether `METHOD PATH HTTP/1.1` asks for one of the HTTP API's paths."""
    parts = request_line.split(b" ")
    if len(parts) != 3:
        return False
    path = parts[1].split(b"?", 1)[0]
    return any(path == p or path.startswith(p) for p in API_PATHS)


class SharedPortConnection(ServerConnection):
    """A websockets connection that first looks at the request line and hands HTTP API
    requests to `http_protocol()` (aiohttp's request handler factory)."""

    def __init__(self, *args: Any, http_protocol: Callable[[], asyncio.Protocol], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._http_protocol = http_protocol
        self._head = b""
        self._sniffing = True
        self._raw: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._raw = transport  # type: ignore[assignment]
        self._timer = self.loop.call_later(HEAD_TIMEOUT_S, transport.abort)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if not self._sniffing:
            super().data_received(data)
            return
        self._head += data
        end = self._head.find(b"\r\n")
        if end < 0 and len(self._head) <= MAX_REQUEST_LINE:
            return
        self._sniffing = False
        assert self._timer is not None and self._raw is not None
        self._timer.cancel()
        head, transport = self._head, self._raw
        self._head = b""
        if end >= 0 and is_http_api_request(head[:end]):
            http = self._http_protocol()
            transport.set_protocol(http)
            http.connection_made(transport)
            http.data_received(head)
        else:
            super().connection_made(transport)
            super().data_received(head)

    def eof_received(self) -> bool | None:
        if self._sniffing:
            return False  # closed before a request line: the transport closes
        return super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._sniffing:  # websockets never saw this connection
            if self._timer is not None:
                self._timer.cancel()
            return
        super().connection_lost(exc)
