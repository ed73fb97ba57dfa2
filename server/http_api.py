"""OpenAI-compatible HTTP API: `POST /v1/audio/transcriptions` (and `GET /v1/models`).

Existing OpenAI client code works by pointing its base URL at this listener:
multipart `file` (any format PyAV decodes) and `model`, `response_format` json, text,
srt, vtt or verbose_json, `timestamp_granularities[]` word and/or segment (with
verbose_json), `language` (Mandarin only), `prompt` (its words and phrases become
hotwords). Text is punctuated and its numbers written as figures, as OpenAI's is, unless
the server runs with `--punctuation off` / `--itn off`. Errors are JSON in OpenAI's shape:
`{"error": {"message", "type", "param", "code"}}` with a 4xx status for the client's
mistakes; internals never reach the client.

The API runs on aiohttp (a mature asyncio HTTP server: streaming multipart, keep-alive,
chunked uploads, lingering close) on the same event loop: by default on the main port,
where `server.shared_port` hands it the connections for its paths (websockets refuses
request bodies), or on a port of its own with `--http-port`. Recognition runs on one
worker thread, never on the loop: the file is decoded, segmented by VAD and recognised
in length-sorted batches by `asr.batch` (the offline pipeline).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import tempfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from asr.batch.engine import BatchEngine, EngineOptions
from asr.batch.formats import render, token_ends
from asr.batch.inputs import InputItem
from asr.batch.pipeline import BatchOptions, prepare, recognize_prepared
from asr.batch.results import Segment, Transcript
from asr.text.options import TextOptions

from .auth import key_ok

__all__ = ["HttpApi", "ApiError", "TRANSCRIPTIONS_PATH", "RESPONSE_FORMATS"]

log = logging.getLogger("tingxie.http")

TRANSCRIPTIONS_PATH = "/v1/audio/transcriptions"
RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
GRANULARITIES = ("word", "segment")
MANDARIN = {"zh", "zh-cn", "zh-hans", "cmn", "chinese", "mandarin"}
MAX_FIELD_BYTES = 16 * 1024  # a non-file form field
MAX_FIELDS_BYTES = 64 * 1024  # all non-file fields together (a chunked body has no Content-Length)
MAX_PARTS = 64
MAX_PENDING = 8  # requests queued for the model beyond the one running


class ApiError(Exception):
    """A request refused with an HTTP status and an OpenAI-style error body."""

    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None,
                 type: str = "invalid_request_error") -> None:  # `type`: OpenAI's field name
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.type = status, message, code, param, type

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class _Request:
    data_path: str
    filename: str
    model: str
    response_format: str
    granularities: tuple[str, ...]
    prompt: str = ""


class HttpApi:
    """The HTTP listener; `start` binds it on the running loop, `close` stops it."""

    def __init__(self, app: Any, host: str, port: int, max_upload_bytes: int) -> None:
        self.app = app  # server.app.App: settings (API keys), the recognizer, shutting_down
        self.host, self.requested_port = host, port
        self.max_upload_bytes = max_upload_bytes
        settings = app.settings
        self.options = BatchOptions(engine=EngineOptions(), text=TextOptions(settings.punctuation, settings.itn))
        self.engine = BatchEngine(app.rec, self.options.engine)
        self.record = self.options.record(app.rec)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="tingxie-http")
        self._pending = 0
        self._runner: Any = None
        self.port = 0

    async def start(self, shared: bool = False) -> None:
        """Listen on the API's own port, or (shared: on the main port) only build the
        handler that `protocol` gives the main port's API connections."""
        middlewares = [_cors_middleware()] + ([web.middleware(_one_request_per_connection)] if shared else [])
        api = web.Application(client_max_size=self.max_upload_bytes + MAX_FIELD_BYTES, middlewares=middlewares)
        api.router.add_route("*", TRANSCRIPTIONS_PATH, self._transcriptions)
        api.router.add_route("*", "/v1/models", self._models)
        api.router.add_route("*", "/{tail:.*}", self._not_found)
        self._runner = web.AppRunner(api, access_log=None, handle_signals=False)
        await self._runner.setup()
        if not shared:
            site = web.TCPSite(self._runner, self.host, self.requested_port)
            await site.start()
            self.port = self._runner.addresses[0][1]
            log.info("OpenAI-compatible HTTP API on %s:%d%s", self.host, self.port, TRANSCRIPTIONS_PATH)

    def protocol(self) -> Any:
        """A new aiohttp request handler (an asyncio protocol) for one connection."""
        assert self._runner is not None and self._runner.server is not None
        return self._runner.server()

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ handlers

    def _json(self, body: Any, status: int = 200, headers: dict[str, str] | None = None):
        return web.Response(status=status, text=json.dumps(body, ensure_ascii=False),
                            content_type="application/json", headers=headers)

    def _error(self, e: ApiError):
        headers = {"WWW-Authenticate": 'Bearer realm="tingxie"'} if e.status == 401 else None
        if e.status == 503:
            headers = {"Retry-After": "1"}
        return self._json(e.body(), e.status, headers)

    def _authorize(self, request: Any) -> None:
        keys = self.app.settings.api_key
        if not keys:
            return
        auth = request.headers.get("Authorization", "")
        given = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        if not key_ok(given, keys):
            raise ApiError(401, "Incorrect API key provided (Authorization: Bearer KEY).", "invalid_api_key")

    async def _not_found(self, request: Any):
        return self._error(ApiError(404, f"Unknown request URL: {request.method} {request.path}.", "unknown_url"))

    async def _models(self, request: Any):
        try:
            self._authorize(request)
            if request.method != "GET":
                raise ApiError(405, f"{request.method} is not allowed on /v1/models; use GET.", "method_not_allowed")
        except ApiError as e:
            return self._error(e)
        model = {"id": self.app.model_name, "object": "model", "created": 0, "owned_by": "tingxie"}
        return self._json({"object": "list", "data": [model]})

    async def _transcriptions(self, request: Any):
        data_path = None
        try:
            self._authorize(request)
            if request.method != "POST":
                raise ApiError(405, f"{request.method} is not allowed on {TRANSCRIPTIONS_PATH}; use POST.",
                               "method_not_allowed")
            if self.app.shutting_down:
                raise ApiError(503, "The server is shutting down.", "server_shutting_down", type="server_error")
            req = await self._read_form(request)
            data_path = req.data_path
            if self._pending > MAX_PENDING:
                raise ApiError(503, "The server is busy; retry shortly.", "server_busy", type="server_error")
            self._pending += 1
            try:
                loop = asyncio.get_running_loop()
                transcript = await loop.run_in_executor(self._pool, self._recognize, req)
            finally:
                self._pending -= 1
            return self._respond(transcript, req)
        except ApiError as e:
            return self._error(e)
        except Exception:  # internals never reach the client
            log.exception("transcription request failed")
            return self._error(ApiError(500, "The server had an error while processing your request.", None,
                                        type="server_error"))
        finally:
            if data_path is not None:
                try:
                    os.unlink(data_path)
                except OSError:
                    pass

    async def _read_form(self, request: Any) -> _Request:
        if request.content_type != "multipart/form-data":
            raise ApiError(400, "Expected a multipart/form-data body with a 'file' part "
                                f"(got {request.content_type or 'no content type'}).", "invalid_content_type")
        if request.content_length is not None and request.content_length > self.max_upload_bytes + MAX_FIELD_BYTES:
            raise ApiError(413, f"Maximum content size limit ({self.max_upload_bytes} bytes) exceeded "
                                f"({request.content_length} bytes).", "file_too_large", "file")
        from aiohttp.http_exceptions import HttpProcessingError  # noqa: PLC0415 (optional until the API is on)

        fields: dict[str, list[str]] = {}
        data_path = filename = None
        field_bytes = parts = 0
        try:
            reader = await request.multipart()
            async for part in reader:
                parts += 1
                if parts > MAX_PARTS:
                    raise ApiError(400, f"Too many parts in the form (at most {MAX_PARTS}).", "invalid_multipart")
                if part.name == "file":
                    if data_path is not None:
                        raise ApiError(400, "Only one 'file' may be uploaded per request.", "invalid_value", "file")
                    filename = _filename(part.filename)
                    data_path = await self._save(part)
                else:
                    value = await self._field(part)
                    field_bytes += len(value.encode("utf-8", "surrogateescape"))
                    if field_bytes > MAX_FIELDS_BYTES:
                        raise ApiError(413, f"The form's fields exceed {MAX_FIELDS_BYTES} bytes.", "fields_too_large")
                    if part.name:
                        fields.setdefault(part.name, []).append(value)
        except ApiError:
            if data_path:
                os.unlink(data_path)
            raise
        except (ValueError, AssertionError, HttpProcessingError) as e:  # malformed multipart
            if data_path:
                os.unlink(data_path)
            detail = e.message if isinstance(e, HttpProcessingError) else str(e)
            raise ApiError(400, f"Malformed multipart body: {str(detail)[:200]}", "invalid_multipart") from None
        try:
            return self._validate(fields, data_path, filename)
        except ApiError:
            if data_path:
                os.unlink(data_path)
            raise

    @staticmethod
    async def _field(part: Any) -> str:
        data = bytearray()
        while chunk := await part.read_chunk(4096):
            data += chunk
            if len(data) > MAX_FIELD_BYTES:
                raise ApiError(400, f"The '{part.name}' field is too long.", "invalid_value", part.name)
        return data.decode("utf-8", "replace")

    async def _save(self, part: Any) -> str:
        fd, path = tempfile.mkstemp(prefix="tingxie-upload-")
        size = 0
        try:
            with os.fdopen(fd, "wb") as f:
                while True:
                    chunk = await part.read_chunk(1 << 16)
                    if not chunk:
                        break
                    size += len(chunk)
                    if size > self.max_upload_bytes:
                        raise ApiError(413, f"Maximum content size limit ({self.max_upload_bytes} bytes) exceeded.",
                                       "file_too_large", "file")
                    f.write(chunk)
        except BaseException:
            os.unlink(path)
            raise
        return path

    def _validate(self, fields: dict[str, list[str]], data_path: str | None, filename: str | None) -> _Request:
        def one(name: str) -> str | None:
            values = fields.get(name)
            return values[-1].strip() if values else None

        if data_path is None:
            raise ApiError(400, "You must provide a file ('file' part of a multipart/form-data body).",
                           "missing_required_parameter", "file")
        model = one("model")
        if not model:
            raise ApiError(400, "You must provide a model parameter.", "missing_required_parameter", "model")
        fmt = one("response_format") or "json"
        if fmt not in RESPONSE_FORMATS:
            raise ApiError(400, f"Invalid value for response_format: {fmt!r}; supported: {', '.join(RESPONSE_FORMATS)}.",
                           "invalid_value", "response_format")
        grans = tuple(g.strip() for g in fields.get("timestamp_granularities[]", []) + fields.get("timestamp_granularities", []))
        for g in grans:
            if g not in GRANULARITIES:
                raise ApiError(400, f"Invalid value for timestamp_granularities: {g!r}; supported: word, segment.",
                               "invalid_value", "timestamp_granularities")
        if grans and fmt != "verbose_json":
            raise ApiError(400, "timestamp_granularities needs response_format=verbose_json.",
                           "invalid_value", "timestamp_granularities")
        language = (one("language") or "").lower()
        if language and language not in MANDARIN:
            raise ApiError(400, f"Unsupported language {language!r}: this server recognises Mandarin (language=zh).",
                           "unsupported_language", "language")
        if (one("stream") or "false").lower() in ("true", "1"):
            raise ApiError(400, "Streaming responses are not supported here; use the websocket API (/v1/stream).",
                           "unsupported_value", "stream")
        return _Request(data_path, filename or "upload", model, fmt, grans or ("segment",), one("prompt") or "")

    # ------------------------------------------------------------------ work (worker thread)

    def _recognize(self, req: _Request) -> Transcript:
        item = InputItem(req.filename, req.data_path, "upload")
        prepared = prepare(item, self.options, self.app.rec.full_pass_features, label=req.filename)
        if prepared.error:
            if prepared.internal:
                raise RuntimeError(prepared.error)
            # The decoder names the file it read: the client knows it by its own name.
            message = prepared.error.replace(req.data_path, req.filename).replace(os.path.basename(req.data_path), req.filename)
            raise ApiError(400, f"Could not decode the audio: {message}", "invalid_audio", "file")
        text = self.app.text
        hotwords = text.context(req.prompt, prompt=True) if req.prompt else text.context()
        (outcome,) = recognize_prepared(self.engine, [prepared], self.record, text.formatter, self.options.text, hotwords)
        assert outcome.transcript is not None
        return outcome.transcript

    # ------------------------------------------------------------------ responses

    def _respond(self, t: Transcript, req: _Request):
        fmt = req.response_format
        if fmt == "text":
            return web.Response(text=t.text + "\n", content_type="text/plain", charset="utf-8")
        if fmt in ("srt", "vtt"):
            return web.Response(text=render(t, fmt), content_type="text/vtt" if fmt == "vtt" else "application/x-subrip",
                                charset="utf-8")
        usage = {"type": "duration", "seconds": math.ceil(t.duration)}
        if fmt == "json":
            return self._json({"text": t.text, "usage": usage})
        body: dict[str, Any] = {"task": "transcribe", "language": "chinese", "duration": round(t.duration, 3),
                                "text": t.text}
        if "segment" in req.granularities:
            body["segments"] = [_segment(i, s) for i, s in enumerate(t.segments)]
        if "word" in req.granularities:
            body["words"] = [w for s in t.segments for w in _words(s)]
        body["usage"] = usage
        return self._json(body)


async def _one_request_per_connection(request: Any, handler: Any) -> Any:
    """On the main port a connection is routed by its first request; keep-alive would
    bring the next one (perhaps a websocket upgrade) here too, so each answer closes it."""
    response = await handler(request)
    response.force_close()
    return response


def _filename(name: str | None) -> str:
    """The upload's file name, for labels and messages: control characters (a NUL would
    reach the decoder's C strings) are refused."""
    if not name:
        return "upload"
    if len(name) > 255 or any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise ApiError(400, "Invalid filename: it must not contain control characters (at most 255 characters).",
                       "invalid_value", "file")
    return name


def _cors_middleware():
    @web.middleware
    async def cors(request: Any, handler: Any):
        """The browser page (served on the websocket port) posts files here: another
        origin. Bearer keys, not cookies, authenticate, so any origin may call."""
        if request.method == "OPTIONS":
            response = web.Response(status=204)
            response.headers["Access-Control-Allow-Methods"] = "GET, POST"
            response.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
            response.headers["Access-Control-Max-Age"] = "600"
        else:
            response = await handler(request)
        response.headers["Access-Control-Allow-Origin"] = "*"
        return response

    return cors


def _segment(i: int, s: Segment) -> dict[str, Any]:
    logps = [math.log(max(tok.confidence, 1e-10)) for tok in s.tokens]
    raw = s.text.encode("utf-8")
    return {
        "id": i, "seek": 0, "start": round(s.start, 3), "end": round(s.end, 3), "text": s.text,
        "tokens": [tok.id for tok in s.tokens], "temperature": 0.0,
        "avg_logprob": round(sum(logps) / len(logps), 4) if logps else 0.0,
        "compression_ratio": round(len(raw) / len(zlib.compress(raw)), 4) if raw else 0.0,
        "no_speech_prob": 0.0,  # speech was found by the VAD; no separate estimate
    }


def _words(s: Segment) -> list[dict[str, Any]]:
    """Words with times: each Han character is a word; consecutive Latin/digit pieces
    with no space between them in the text join into one word."""
    ends = token_ends(s.text, s.tokens)
    words: list[dict[str, Any]] = []
    prev_end = 0
    for tok, end in zip(s.tokens, ends):
        piece = s.text[prev_end:end]
        glued = bool(words) and piece[:1].isascii() and piece[:1].isalnum() and words[-1]["word"][-1:].isascii() \
            and words[-1]["word"][-1:].isalnum()
        prev_end = end
        text = piece.strip()
        if not text:
            continue
        if glued:
            words[-1]["word"] += text
            words[-1]["end"] = round(tok.end, 3)
        else:
            words.append({"word": text, "start": round(tok.start, 3), "end": round(tok.end, 3)})
    return words
