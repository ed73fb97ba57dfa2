"""The server's exception tree, mapped to wire error codes, close codes and HTTP statuses
in this one module.

Everything a session or the engine raises is a `ServerError` (or an unexpected
exception, which becomes `internal_error` with a generic message: internals never reach
clients). `to_error` turns either into the `error` message and the close code to send.
"""

from __future__ import annotations

import http

__all__ = [
    "ServerError",
    "ProtocolError",
    "FrameTooLarge",
    "Overloaded",
    "IdleTimeout",
    "InternalError",
    "HandshakeRefused",
    "Unauthorized",
    "ServerBusy",
    "NotFound",
    "to_error",
    "CLOSE_NORMAL",
    "CLOSE_GOING_AWAY",
]

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001  # server shutting down
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
CLOSE_TRY_LATER = 1013


class ServerError(Exception):
    """A failure reported to the client as `{"type": "error", "code", "message"}`."""

    code = "internal_error"
    close_code = CLOSE_INTERNAL

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class ProtocolError(ServerError):
    """The client broke the protocol or a policy: bad JSON, unknown message or key, invalid
    audio configuration, audio before a valid configuration, a message out of order.

    Codes: bad_json, bad_message, bad_config, unexpected_message, bad_audio.
    """

    code = "bad_message"
    close_code = CLOSE_POLICY


class IdleTimeout(ProtocolError):
    code = "idle_timeout"


class FrameTooLarge(ServerError):
    code = "frame_too_large"
    close_code = CLOSE_TOO_BIG


class Overloaded(ServerError):
    """The engine cannot keep up: a request waited longer than the overload limit."""

    code = "overloaded"
    close_code = CLOSE_TRY_LATER


class InternalError(ServerError):
    code = "internal_error"
    close_code = CLOSE_INTERNAL


class HandshakeRefused(Exception):
    """Refused before the websocket opens: an HTTP status and a one-line reason."""

    status = http.HTTPStatus.BAD_REQUEST

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Unauthorized(HandshakeRefused):
    status = http.HTTPStatus.UNAUTHORIZED


class ServerBusy(HandshakeRefused):
    status = http.HTTPStatus.SERVICE_UNAVAILABLE


class NotFound(HandshakeRefused):
    status = http.HTTPStatus.NOT_FOUND


INTERNAL_MESSAGE = "internal server error"


def to_error(exc: BaseException) -> tuple[str, str, int]:
    """(code, message, close code) for any exception; unexpected ones stay opaque."""
    if isinstance(exc, ServerError):
        return exc.code, exc.message, exc.close_code
    return InternalError.code, INTERNAL_MESSAGE, CLOSE_INTERNAL
