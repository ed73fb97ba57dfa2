"""The websockets application: HTTP routes and handshake limits in `process_request`,
one `server.connection.SessionDriver` per websocket, and graceful shutdown.

Routes on one port: `GET /` (browser page) and `/static/*`, `GET /healthz`,
`GET /metrics` (API key as for streams unless `--metrics-auth none`), the websocket
`GET /v1/stream` (protocol: docs/protocol.md), and the OpenAI-compatible HTTP API
(`server.http_api`, reached through `server.shared_port`; on a port of its own with
`--http-port`).
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import gc
import http
import json
import logging
import secrets
import signal
import time
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qsl, urlsplit

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from asr.text.options import TextOptions

from .auth import key_ok
from .batcher import Batcher
from .connection import SessionDriver, limit_receive_buffers
from .integrations import Integrations
from .errors import HandshakeRefused, NotFound, ServerBusy, Unauthorized
from .http_api import TRANSCRIPTIONS_PATH, HttpApi
from .metrics import CONTENT_TYPE_LATEST, Metrics
from .session import Session, SessionConfig
from .settings import Settings
from .shared_port import SharedPortConnection
from .text import TextService

__all__ = ["App", "STREAM_PATH"]

log = logging.getLogger("tingxie.server")

STREAM_PATH = "/v1/stream"
STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
HARD_FRAME_FACTOR = 2  # websockets cuts frames above this multiple of max_frame_bytes itself
PING_INTERVAL_S = 20.0


def _response(status: http.HTTPStatus, body: bytes, content_type: str, extra: list[tuple[str, str]] | None = None) -> Response:
    headers = Headers(
        [
            ("Date", email.utils.formatdate(usegmt=True)),
            ("Connection", "close"),
            ("Content-Length", str(len(body))),
            ("Content-Type", content_type),
            ("Cache-Control", "no-store"),
            *(extra or []),
        ]
    )
    return Response(status.value, status.phrase, headers, body)


class App:
    """One server: the model (through the batcher), the sessions and the HTTP routes.

    recognizer: an `asr.recognizer.Recognizer` (built by the caller: no globals here).
    new_vad: optional per-channel voice activity detector factory (rate -> detector).
    """

    def __init__(
        self,
        settings: Settings,
        recognizer: Any,
        new_vad: Callable[[int], Any] | None = None,
        batcher: Batcher | None = None,
    ) -> None:
        self.settings = settings
        self.rec = recognizer
        self.model_name = recognizer.name
        self.metrics = Metrics(self.model_name)
        self.batcher = batcher or Batcher(
            recognizer,
            max_batch=settings.max_batch,
            max_wait_ms=settings.max_wait_ms,
            overload_s=settings.overload_s,
            chunk_seconds=recognizer.stride * recognizer.features.frame_shift_ms / 1000,
            threads=settings.threads,
            final_pass_max_wait_ms=settings.final_pass_max_wait_ms if settings.final_pass == "auto" else None,
        )
        self.batcher.on_batch = self.metrics.on_batch
        self.batcher.on_pass_skipped = self.metrics.on_pass_skipped
        self.text = TextService(recognizer, settings.punct_model or None, settings.hotwords or None, settings.hotword_boost)
        self.session_config = SessionConfig(self.model_name, settings.endpoint, settings.final_pass, settings.max_frame_bytes,
                                            TextOptions(settings.punctuation, settings.itn))
        self._rescoring_streams = None if settings.final_pass == "stream" else False
        self._new_vad = new_vad
        self._slots: set[ServerConnection] = set()  # connections holding a session slot
        self._drivers: set[SessionDriver] = set()
        self._server: Server | None = None
        self._port = 0
        self.shutting_down = False
        self.http_api: HttpApi | None = None  # the OpenAI-compatible API, on the main port or its own
        self.integrations = Integrations(self)  # call-center and compatibility protocols

    # ------------------------------------------------------------------ lifecycle

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        return self._port

    @property
    def active_sessions(self) -> int:
        return len(self._slots)

    async def start(self) -> None:
        await self.batcher.start()
        t0 = time.perf_counter()
        await self.batcher.run_in_worker(self._warm_up)
        log.debug("warm-up took %.2f s", time.perf_counter() - t0)
        s = self.settings
        self.http_api = HttpApi(self, s.host, s.http_port, int(s.max_upload_mb * 1_000_000))
        shared = s.http_port < 0
        await self.http_api.start(shared)  # before the main port opens: ready for its first connection
        self._server = await serve(
            self._handle,
            s.host,
            s.port,
            create_connection=functools.partial(SharedPortConnection, http_protocol=self.http_api.protocol)
            if shared else ServerConnection,
            process_request=self._process_request,
            compression=None,  # audio does not compress; deflate would only cost CPU
            max_size=HARD_FRAME_FACTOR * s.max_frame_bytes,
            max_queue=4,
            # Pings keep idle NAT mappings open, but a missing pong never closes a
            # connection: while backpressure pauses reading, the client's pong waits
            # unread behind its audio (dead peers are found by the idle and send timeouts).
            ping_interval=PING_INTERVAL_S,
            ping_timeout=None,
            close_timeout=5,
            server_header="tingxie",
            select_subprotocol=self.integrations.select_subprotocol,
        )
        limit_receive_buffers(self._server)
        self._port = self._server.sockets[0].getsockname()[1]
        search = self.rec.search_method
        if search == "prefix_beam":
            search += f" beam {getattr(self.rec, 'beam_size', '?')}"
        log.info("listening on %s:%d (model %s; search %s, language model %s)", s.host, self.port, self.model_name,
                 search, "on" if self.rec.lm is not None else "off")
        if shared:
            self.http_api.port = self.port
            log.info("OpenAI-compatible HTTP API on the same port, %s", TRANSCRIPTIONS_PATH)
        await self.integrations.start()

    def _warm_up(self) -> None:
        """Streaming steps and one full-context pass on silence, so that the first real
        sessions do not pay for kernel selection, allocations and tracing: four streams
        of different lengths, started at different steps, go through the kinds of step
        (with or without history, masks and partial chunks) that have traces of their own."""
        rate = self.rec.features.sample_rate
        streams = []
        for seconds in (3.5, 2.2, 1.0, 0.4):
            stream = self._new_stream(rate)
            stream.accept_waveform(np.zeros(int(seconds * rate), dtype=np.float32))
            stream.input_finished()
            streams.append(stream)
        self.rec.step([s for s in streams[1:] if s.ready()])  # fresh streams, one partial chunk
        for _ in range(2):
            if streams[0].ready():
                self.rec.step(streams[:1])
        while ready := [s for s in streams if s.ready()]:
            self.rec.step(ready)
        if self.settings.final_pass != "stream":
            self.rec.transcribe(np.zeros(rate, dtype=np.float32), rate)

    async def shutdown(self) -> None:
        """Stop accepting connections; let every session decode what it received and send
        its finals (close 1001), for up to `shutdown_timeout_s`; then stop the engine."""
        if self.shutting_down:
            return
        self.shutting_down = True
        log.info("shutting down: %d sessions to finish", len(self._drivers))
        assert self._server is not None
        for d in list(self._drivers):
            d.shutdown()
        self.integrations.shutdown()
        # Keep listening while the sessions drain: /healthz and new handshakes get 503
        # shutting_down (a load balancer can tell draining from dead), not a refused
        # connection.
        deadline = time.monotonic() + self.settings.shutdown_timeout_s
        while (self._drivers or self.integrations.busy) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self._server.close(close_connections=False)
        try:
            await asyncio.wait_for(self._server.wait_closed(), max(deadline - time.monotonic(), 1.0))
        except TimeoutError:
            log.warning("sessions still open after %.0f s: closing them", self.settings.shutdown_timeout_s)
            self._server.close(close_connections=True)
            await self._server.wait_closed()
        if self.http_api is not None:
            await self.http_api.close()
        await self.integrations.close()
        await self.batcher.close()
        log.info("stopped")

    async def run(self) -> None:
        """Serve until SIGTERM or SIGINT, then shut down gracefully."""
        await self.start()
        # What is loaded by now (model, LM, traces: ~200k objects with the default model)
        # lives as long as the process. Frozen, it is out of the cyclic collector's sight:
        # a full collection over it took 90-170 ms, and stalled the loop and the worker
        # (GIL) under load.
        gc.collect()
        gc.freeze()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await self.shutdown()

    # ------------------------------------------------------------------ HTTP

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        try:
            if url.path == STREAM_PATH:
                self._admit(connection, request, dict(parse_qsl(url.query)))
                return None
            if self.integrations.route(connection, request):
                return None
            if url.path == "/healthz":
                return self._healthz()
            if url.path == "/metrics":
                if self.settings.metrics_auth == "key":
                    self.authorize(request, {})
                return _response(http.HTTPStatus.OK, self.metrics.render(), CONTENT_TYPE_LATEST)
            if url.path in ("/", "/index.html"):
                return self._static("index.html")
            if url.path.startswith("/static/"):
                return self._static(url.path[len("/static/") :])
            raise NotFound(f"no route for {url.path}")
        except HandshakeRefused as e:
            return self.refusal(e)

    def refusal(self, e: HandshakeRefused) -> Response:
        """The HTTP answer to a refused handshake (401, 503, 404), counted in the metrics."""
        self.metrics.rejected.labels(status=str(e.status.value)).inc()
        extra = [("WWW-Authenticate", 'Bearer realm="tingxie"')] if isinstance(e, Unauthorized) else []
        return _response(e.status, (e.message + "\n").encode(), "text/plain; charset=utf-8", extra)

    def _admit(self, connection: ServerConnection, request: Request, query: dict[str, str]) -> None:
        self.authorize(request, query)
        self.take_slot(connection)

    def authorize(self, request: Request, query: dict[str, str]) -> None:
        """Unauthorized unless an API key is configured and given (Bearer header, or
        `api_key` in the query) or none is configured."""
        keys = self.settings.api_key
        if keys:
            auth = request.headers.get("Authorization", "")
            given = auth[7:].strip() if auth[:7].lower() == "bearer " else query.get("api_key", "")
            if not key_ok(given, keys):
                raise Unauthorized("a valid API key is required (Authorization: Bearer KEY, or ?api_key=KEY)")

    def hold_slot(self, holder: Any) -> None:
        """Count `holder` (a connection, an AudioSocket call) against `max_sessions` until
        `release_slot`; ServerBusy when shutting down or at the limit."""
        if self.shutting_down:
            raise ServerBusy("the server is shutting down")
        if len(self._slots) >= self.settings.max_sessions:
            raise ServerBusy(f"the server is busy: {self.settings.max_sessions} sessions are open")
        self._slots.add(holder)

    def has_slot(self, holder: Any) -> bool:
        return holder in self._slots

    def release_slot(self, holder: Any) -> None:
        self._slots.discard(holder)

    def take_slot(self, connection: ServerConnection) -> None:
        """Hold a session slot for `connection` until it closes (see `hold_slot`)."""
        self.hold_slot(connection)
        # Release the slot however the connection ends (even if the handshake fails later).
        asyncio.get_running_loop().create_task(self._release_on_close(connection))

    async def _release_on_close(self, connection: ServerConnection) -> None:
        try:
            await connection.wait_closed()
        finally:
            self._slots.discard(connection)

    def _healthz(self) -> Response:
        body = {
            "status": "shutting_down" if self.shutting_down else "ok",
            "model": self.model_name,
            "sessions": self.active_sessions,
            "max_sessions": self.settings.max_sessions,
            # where the OpenAI-compatible API listens (the browser page sends files there)
            "http_port": self.http_api.port if self.http_api is not None else None,
        }
        status = http.HTTPStatus.SERVICE_UNAVAILABLE if self.shutting_down else http.HTTPStatus.OK
        return _response(status, json.dumps(body).encode(), "application/json")

    def _static(self, name: str) -> Response:
        path = STATIC_DIR / name
        if "/" in name or name.startswith(".") or path.suffix not in STATIC_TYPES or not path.is_file():
            raise NotFound(f"no such file: {name}")
        return _response(http.HTTPStatus.OK, path.read_bytes(), STATIC_TYPES[path.suffix])

    # ------------------------------------------------------------------ websocket

    async def _handle(self, connection: ServerConnection) -> None:
        if await self.integrations.handle(connection):
            return
        query = dict(parse_qsl(urlsplit(connection.request.path).query)) if connection.request else {}
        session = Session(secrets.token_hex(8), self.session_config, self._new_stream, query, self._new_vad, self.text)
        driver = SessionDriver(connection, session, self.batcher, self.metrics, self.settings)
        self._drivers.add(driver)
        self.metrics.sessions_total.inc()
        self.metrics.sessions.inc()
        try:
            await driver.run()
        finally:
            self.metrics.sessions.dec()
            self._drivers.discard(driver)
            self._slots.discard(connection)

    def _new_stream(self, sample_rate: int, hotwords: Any = None) -> Any:
        # final_pass off: the engine runs a final model's passes itself, batched across sessions
        return self.rec.stream(sample_rate, rescoring=self._rescoring_streams, hotwords=hotwords, final_pass=False)
