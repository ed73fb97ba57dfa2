"""Vosk server websocket protocol (`alphacep/vosk-server` `websocket/asr_server.py`): at
`/vosk` and on `--compat vosk=PORT`.

Client: optional `{"config": {"sample_rate": 16000, ...}}` (no reply; default 8000 as
VOSK_SAMPLE_RATE), binary int16 LE PCM, `{"eof" : 1}` (parsed as JSON, not only as the
exact string) or `{"reset" : 1}`. LOCKSTEP: exactly one reply per audio, eof or reset
message, after the audio has been decoded: `{"partial": ...}`, or `{"result": [{"conf",
"end", "start", "word"}], "text": ...}` when an utterance ended (times in seconds; one
entry per recognised token; Han text is not space-separated). After eof: the final
result, then a normal close. Pretty-printed JSON, as Vosk sends it. A malformed text
message closes the connection with 1011, as an exception in Vosk's handler does.
"""

from __future__ import annotations

import logging
from typing import Any

from websockets.exceptions import ConnectionClosed

from .. import validate
from ..protocol import SAMPLE_RATES, Final, Partial, ServerMessage
from ..telephony.runner import SessionRunner
from .common import dumps, next_frame

__all__ = ["handle_vosk", "result_message"]

log = logging.getLogger("tingxie.compat")

DEFAULT_RATE = 8000


def result_message(finals: list[Final]) -> dict[str, Any]:
    words = [{"conf": round(t.confidence, 6), "end": round(t.end, 6), "start": round(t.start, 6), "word": t.text}
             for f in finals for t in f.tokens]
    return {"result": words, "text": "".join(f.text for f in finals)} if words else {"text": "".join(f.text for f in finals)}


class _Recognizer:
    """The Vosk KaldiRecognizer's view of a session: the partial, and finals not yet
    returned."""

    def __init__(self, integ: Any, rate: int) -> None:
        self.partial = ""
        self.finals: list[Final] = []
        self.runner = SessionRunner(integ.app, integ.new_id(), {"sample_rate": rate}, self.on_message)

    def on_message(self, msg: ServerMessage) -> None:
        if isinstance(msg, Partial):
            self.partial = msg.text
        elif isinstance(msg, Final):
            self.finals.append(msg)
            self.partial = ""

    def reply(self) -> dict[str, Any]:
        if self.finals:
            return result_message([self.finals.pop(0)])
        return {"partial": self.partial}


def _parse(text: str) -> dict[str, Any]:
    obj = validate.loads(text)
    if not isinstance(obj, dict):
        raise ValueError("not an object")
    return obj


async def handle_vosk(integ: Any, ws: Any) -> None:
    rate = DEFAULT_RATE
    rec: _Recognizer | None = None
    timeout = integ.app.settings.shutdown_timeout_s + 60
    try:
        while True:
            try:
                frame = await next_frame(ws, integ.app.settings.idle_timeout_s)
            except TimeoutError:
                await ws.close(1008, "idle timeout")
                return
            if isinstance(frame, bytes):
                if rec is None:
                    rec = _Recognizer(integ, rate)
                rec.runner.feed(frame)
                await rec.runner.wait_idle()
                if rec.runner.failed:
                    await ws.close(1011, rec.runner.failed[0])
                    return
                await ws.send(dumps(rec.reply(), indent=4))
                continue
            try:
                obj = _parse(frame)
            except (ValueError, RecursionError):
                await ws.close(1011, "bad message")
                return
            if "config" in obj:
                cfg = obj["config"]
                try:
                    if not isinstance(cfg, dict):
                        raise validate.FieldError("config must be an object")
                    rate = validate.integer("sample_rate", cfg.get("sample_rate", rate), SAMPLE_RATES[0],
                                            SAMPLE_RATES[1], strings=False)
                except validate.FieldError:
                    await ws.close(1011, "bad sample_rate")
                    return
                continue
            if obj.get("eof") or obj.get("reset"):
                finals: list[Final] = []
                if rec is not None:
                    rec.runner.end()
                    await rec.runner.wait(timeout)
                    finals, rec = rec.finals, None
                await ws.send(dumps(result_message(finals), indent=4))
                if obj.get("eof"):
                    await ws.close(1000)
                    return
                continue
            await ws.close(1011, "unknown message")
            return
    except ConnectionClosed:
        pass
    finally:
        if rec is not None and not rec.runner.done:
            rec.runner.abort()
