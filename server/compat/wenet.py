"""WeNet websocket protocol (`runtime/core/websocket/websocket_server.cc`): at `/wenet`
and on `--compat wenet=PORT`.

Client: `{"signal":"start","nbest":1,"continuous_decoding":false}`, binary int16 LE mono
PCM (16 kHz: WeNet has no per-request rate; `"sample_rate"` in start is accepted here
as an extension), `{"signal":"end"}`. Server: `server_ready`, `partial_result`,
`final_result` (`nbest` is a JSON-encoded STRING; `word_pieces` in ms, finals only),
then `speech_end` once everything is decoded, and a normal close. A whole file in one
binary frame works. Errors: `{"status":"failed","message":...}`, then close 1008.

Utterances are cut by the server's endpointing; decoding always continues to the end
of the input (as `continuous_decoding: true`), so nothing sent is dropped.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from websockets.exceptions import ConnectionClosed

from .. import validate
from ..protocol import SAMPLE_RATES, Error, Final, Partial, Ready, ServerMessage
from ..telephony.runner import SessionRunner
from .common import Outbox, dumps, next_frame

__all__ = ["handle_wenet", "nbest_partial", "nbest_final"]

log = logging.getLogger("tingxie.compat")


def _ok(kind: str, **kw: Any) -> str:
    return dumps({"status": "ok", "type": kind, **kw})


def nbest_partial(text: str) -> str:
    return json.dumps([{"sentence": text}], ensure_ascii=False)


def nbest_final(msg: Final) -> str:
    pieces = [{"word": t.text, "start": int(round(t.start * 1000)), "end": int(round(t.end * 1000))} for t in msg.tokens]
    return json.dumps([{"sentence": msg.text, "word_pieces": pieces}], ensure_ascii=False)


def _failed(message: str) -> str:
    return dumps({"status": "failed", "message": message})


async def handle_wenet(integ: Any, ws: Any) -> None:
    out = Outbox(ws)
    runner: SessionRunner | None = None

    def on_message(msg: ServerMessage) -> None:
        if isinstance(msg, Ready):
            out.send(_ok("server_ready"))
        elif isinstance(msg, Partial):
            out.send(_ok("partial_result", nbest=nbest_partial(msg.text)))
        elif isinstance(msg, Final):
            out.send(_ok("final_result", nbest=nbest_final(msg)))
        elif isinstance(msg, Error):
            out.send(_failed(msg.message))

    async def fail(message: str) -> None:
        out.send(_failed(message))
        await out.close(1008, "bad request")

    try:
        while True:
            try:
                frame = await next_frame(ws, integ.app.settings.idle_timeout_s)
            except TimeoutError:
                return await fail(f"No message for {integ.app.settings.idle_timeout_s:g} s")
            if isinstance(frame, bytes):
                if runner is None:
                    return await fail("Start signal is expected before binary data")
                runner.feed(frame)
                if runner.failed:
                    return await out.close(1008, "bad audio")
                await runner.wait_capacity()
                continue
            try:
                obj = validate.loads(frame)
                signal = obj.get("signal") if isinstance(obj, dict) else None
            except validate.FieldError:
                signal, obj = None, None
            if signal == "start":
                if runner is not None:
                    return await fail("Start signal received twice")
                try:
                    rate = validate.integer("sample_rate", obj.get("sample_rate", 16000), SAMPLE_RATES[0],
                                            SAMPLE_RATES[1], strings=False)
                except validate.FieldError:
                    return await fail(f"Unsupported sample_rate: use {SAMPLE_RATES[0]} to {SAMPLE_RATES[1]}")
                runner = SessionRunner(integ.app, integ.new_id(), {"sample_rate": rate}, on_message)
            elif signal == "end":
                if runner is None:
                    return await fail("Start signal is expected before end")
                runner.end()
                await runner.wait(integ.app.settings.shutdown_timeout_s + 60)
                if not runner.failed:
                    out.send(_ok("speech_end"))
                return await out.close(1000 if not runner.failed else 1011)
            else:
                return await fail("Unexpected message: send {\"signal\":\"start\"}, binary PCM, {\"signal\":\"end\"}")
    except ConnectionClosed:
        pass
    finally:
        if runner is not None and not runner.done:
            runner.abort()
        await out.stop()
