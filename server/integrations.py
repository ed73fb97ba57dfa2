"""Call-center ingest (Twilio, FreeSWITCH, AudioSocket), call event subscribers and
webhooks, and the compatibility endpoints (WeNet, FunASR, Vosk): wiring into `App`.

`App` calls this module through a few hooks: `route` in `process_request`, `handle` at
the start of the websocket handler, `start` / `shutdown` / `close` in its lifecycle, and
`select_subprotocol` in the handshake. Each protocol lives in its own module
(`server.telephony.*`, `server.compat.*`) and drives the ordinary `Session` through
`server.telephony.runner.SessionRunner`.

Routes on the main port: `/twilio`, `/freeswitch`, `/v1/calls/{call_id}/events`,
`/wenet`, `/funasr`, `/vosk`. Own ports: `--compat NAME=PORT` (any path), and
`--audiosocket-port` (TCP).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import secrets
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qsl, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve

from .compat.funasr import handle_funasr
from .compat.vosk import handle_vosk
from .compat.wenet import handle_wenet
from .auth import twilio_signature_ok
from .connection import limit_receive_buffers
from .errors import HandshakeRefused, ServerBusy, Unauthorized
from .settings import ConfigError
from .telephony.audiosocket import FORMATS as AUDIOSOCKET_FORMATS
from .telephony.audiosocket import handle_audiosocket
from .telephony.calls import Call, parse_roles
from .telephony.freeswitch import FREESWITCH_PATH, SUBPROTOCOL, handle_freeswitch
from .telephony.subscribers import Hub, call_id_from_path, serve_subscriber
from .telephony.twilio import TRACKS, TWILIO_PATH, handle_twilio
from .telephony.webhooks import Webhook

__all__ = ["Integrations", "COMPAT_NAMES", "parse_compat"]

log = logging.getLogger("tingxie.telephony")

COMPAT_NAMES = ("wenet", "funasr", "vosk")
# Offered by the clients we serve: FreeSWITCH mod_audio_fork, FunASR's client, Asterisk.
SUBPROTOCOLS = (SUBPROTOCOL, "binary", "media")


def parse_compat(specs: tuple[str, ...]) -> dict[str, int]:
    """("wenet=10086", "vosk") -> {"wenet": 10086, "vosk": -1} (-1: main-port path only)."""
    out: dict[str, int] = {}
    for spec in specs:
        name, _, port = spec.partition("=")
        name = name.strip().lower()
        if name not in COMPAT_NAMES:
            raise ConfigError(f"--compat {spec!r}: use {', '.join(n + '=PORT' for n in COMPAT_NAMES)}")
        try:
            out[name] = int(port) if port.strip() else -1
        except ValueError:
            raise ConfigError(f"--compat {spec!r}: the port must be a number") from None
        if not -1 <= out[name] <= 65535:
            raise ConfigError(f"--compat {spec!r}: port out of range")
    return out


def _compat_handler(name: str) -> Callable[[Any, ServerConnection], Awaitable[None]]:
    if name == "wenet":
        return handle_wenet
    if name == "funasr":
        return handle_funasr

    return handle_vosk


class Integrations:
    def __init__(self, app: Any) -> None:
        self.app = app
        s = app.settings
        try:
            self.twilio_roles = parse_roles(getattr(s, "twilio_roles", ""), TRACKS)
        except ValueError as e:
            raise ConfigError(f"--twilio-roles: {e}") from None
        self.compat = parse_compat(tuple(getattr(s, "compat", ())))
        self.audiosocket_port: int = getattr(s, "audiosocket_port", -1)
        self.audiosocket_format: str = getattr(s, "audiosocket_format", "slin")
        self.audiosocket_allow = tuple(ipaddress.ip_network(n, strict=False) for n in getattr(s, "audiosocket_allow", ()))
        if self.audiosocket_format not in AUDIOSOCKET_FORMATS:
            raise ConfigError(f"--audiosocket-format must be one of {', '.join(AUDIOSOCKET_FORMATS)}")
        self.hub = Hub()
        url = getattr(s, "webhook_url", "")
        self.webhook = Webhook(url) if url else None
        if self.webhook is not None:
            self.hub.sinks.append(self.webhook)
        self.ports: dict[str, int] = {}  # bound ports: compat names and "audiosocket"
        self._servers: list[Server] = []
        self._tcp: asyncio.base_events.Server | None = None
        self._connections: set[Any] = set()  # websockets and TCP writers being served
        self._tasks: set[asyncio.Task] = set()
        self.shutting_down = False

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        s = self.app.settings
        if self.webhook is not None:
            await self.webhook.start()
        for name, port in self.compat.items():
            if port < 0:
                continue
            server = await serve(functools.partial(self._serve_compat, name), s.host, port, compression=None,
                                 process_request=self._admit_compat,
                                 max_size=2 * s.max_frame_bytes, select_subprotocol=self.select_subprotocol,
                                 ping_interval=20, ping_timeout=None, close_timeout=5, server_header="tingxie")
            limit_receive_buffers(server)
            self._servers.append(server)
            self.ports[name] = server.sockets[0].getsockname()[1]
            log.info("%s-compatible endpoint on %s:%d", name, s.host, self.ports[name])
        if self.audiosocket_port >= 0:
            host = getattr(s, "audiosocket_host", "127.0.0.1")
            self._tcp = await asyncio.start_server(self._serve_audiosocket, host, self.audiosocket_port)
            self.ports["audiosocket"] = self._tcp.sockets[0].getsockname()[1]
            log.info("AudioSocket on %s:%d (0x10 carries %s; peers: %s)", host, self.ports["audiosocket"],
                     self.audiosocket_format, ", ".join(map(str, self.audiosocket_allow)) or "any")

    @property
    def busy(self) -> bool:
        """Calls or compat sessions are still being served."""
        return bool(self._connections)

    def shutdown(self) -> None:
        """End every call (their finals still reach subscribers). The listeners stay open
        until `close`: new connections are refused (503, or a closed socket for
        AudioSocket) while the calls drain."""
        self.shutting_down = True
        for conn in list(self._connections):
            if isinstance(conn, asyncio.StreamWriter):
                conn.transport.abort()  # as if Asterisk hung up: the call's finals still go out
            else:
                task = asyncio.ensure_future(conn.close(1001, "server shutting down"))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        if not self.shutting_down:
            self.shutdown()
        timeout = self.app.settings.shutdown_timeout_s
        for server in self._servers:
            server.close(close_connections=False)
        if self._tcp is not None:
            self._tcp.close()
        for server in self._servers:
            try:
                await asyncio.wait_for(server.wait_closed(), timeout)
            except TimeoutError:
                server.close(close_connections=True)
        if self._tcp is not None:
            try:
                await asyncio.wait_for(self._tcp.wait_closed(), timeout)
            except TimeoutError:
                pass
        if self.webhook is not None:
            await self.webhook.close()

    # ------------------------------------------------------------------ main-port hooks

    def route(self, connection: ServerConnection, request: Any) -> bool:
        """process_request hook: True when the path is one of ours (admitted: None is
        returned to the handshake); False otherwise. Raises HandshakeRefused."""
        url = urlsplit(request.path)
        path = url.path
        if path == TWILIO_PATH:
            token = getattr(self.app.settings, "twilio_auth_token", "")
            if token:
                signature = request.headers.get("X-Twilio-Signature", "")
                if not twilio_signature_ok(token, signature, request.headers.get("Host", ""), request.path):
                    raise Unauthorized("a valid X-Twilio-Signature is required")
                self.app.take_slot(connection)
            elif not self.app.settings.api_key:
                self.app.take_slot(connection)
            # else: the key comes in the start message's customParameters; the call holds a
            # slot only once that is checked (handle_twilio), so strangers hold none.
            if self.app.shutting_down:
                raise ServerBusy("the server is shutting down")
            return True
        if path == FREESWITCH_PATH or path.lstrip("/") in COMPAT_NAMES or call_id_from_path(path):
            self.app._admit(connection, request, dict(parse_qsl(url.query)))
            return True
        return False

    def _admit_compat(self, connection: ServerConnection, request: Any) -> Any:
        """Handshake on a compat port: the same API-key and session-limit checks as the
        main port (existing clients put the key in `?api_key=` or a Bearer header)."""
        try:
            self.app._admit(connection, request, dict(parse_qsl(urlsplit(request.path).query)))
        except HandshakeRefused as e:
            return self.app.refusal(e)
        return None

    async def handle(self, connection: ServerConnection) -> bool:
        """Websocket handler hook: serve our paths; False for the others."""
        url = urlsplit(connection.request.path if connection.request else "/")
        path = url.path
        if path == TWILIO_PATH:
            coro = handle_twilio(self, connection)
        elif path == FREESWITCH_PATH:
            coro = handle_freeswitch(self, connection, dict(parse_qsl(url.query)))
        elif path.lstrip("/") in COMPAT_NAMES:
            coro = _compat_handler(path.lstrip("/"))(self, connection)
        elif (cid := call_id_from_path(path)) is not None:
            await serve_subscriber(self.hub, connection, cid)
            return True
        else:
            return False
        await self._tracked(connection, coro)
        return True

    @staticmethod
    def select_subprotocol(connection: ServerConnection, offered: Any) -> str | None:
        for p in SUBPROTOCOLS:
            if p in offered:
                return p
        return None

    # ------------------------------------------------------------------ shared helpers

    def new_id(self) -> str:
        return secrets.token_hex(8)

    async def finish_call(self, call: Call, runners: list[Any], reason: str) -> None:
        """End every stream of the call, wait for their last finals, then `call_end`."""
        for r in runners:
            r.end()
        try:
            await asyncio.wait_for(asyncio.gather(*(r.wait() for r in runners)), self.app.settings.shutdown_timeout_s)
        except TimeoutError:
            log.warning("call %s: finals not ready in time", call.id)
            for r in runners:
                r.abort()
        call.end(reason, max((r.audio_seconds for r in runners), default=0.0))

    async def _tracked(self, conn: Any, coro: Awaitable[None]) -> None:
        self._connections.add(conn)
        try:
            await coro
        except Exception:  # a handler bug must not reach the server loop
            log.exception("integration handler failed")
        finally:
            self._connections.discard(conn)

    async def _serve_compat(self, name: str, connection: ServerConnection) -> None:
        await self._tracked(connection, _compat_handler(name)(self, connection))

    def audiosocket_peer_ok(self, peer: Any) -> bool:
        if not self.audiosocket_allow:
            return True
        try:
            addr = ipaddress.ip_address(str(peer[0]).split("%")[0])
        except (TypeError, ValueError, IndexError):
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr in net for net in self.audiosocket_allow)

    async def _serve_audiosocket(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        if not self.audiosocket_peer_ok(peer):
            log.warning("audiosocket: connection from %s refused (not in --audiosocket-allow)", peer)
            self.app.metrics.rejected.labels(status="audiosocket_peer").inc()
            writer.transport.abort()
            return
        try:
            self.app.hold_slot(writer)  # an AudioSocket call counts against --max-sessions
        except ServerBusy as e:
            log.warning("audiosocket: call from %s refused: %s", peer, e.message)
            self.app.metrics.rejected.labels(status=str(e.status.value)).inc()
            writer.transport.abort()
            return
        try:
            await self._tracked(writer, handle_audiosocket(self, reader, writer, self.audiosocket_format))
        finally:
            self.app.release_slot(writer)

