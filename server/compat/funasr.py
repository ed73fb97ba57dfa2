"""FunASR runtime websocket protocol (`runtime/docs/websocket_protocol.md`): at `/funasr`
and on `--compat funasr=PORT` (plain ws: pass `--ssl 0` to FunASR's client).

First message: `mode` (online / offline / 2pass), `chunk_size` (list or "5,10,5"),
`wav_name`, `wav_format` (pcm), `audio_fs` (8000..48000, default 16000), `is_speaking`,
`hotwords` (a JSON string {"phrase": weight}, or space-separated words: the phrases bias
the search with the server's boost, FunASR's weights are not comparable and are not
used), `itn` (true: numbers as figures). Finals are punctuated as the server's
`--punctuation` says, as FunASR's 2pass server punctuates its offline results. Then binary
int16 PCM; `{"is_speaking": false}` ends the segment; with `"is_end": true` the server
answers `{"mode","wav_name","is_end":true,"is_final":true}` after the last result and
closes. Audio before the first message is dropped, as the Python server does.

Results: online text as DELTAS (`online` / `2pass-online`, the client concatenates them);
at each endpoint a `2pass-offline` message with the sentence's final text and
timestamps, which replaces its online text; offline mode: one `offline` message with
all the text when the segment ends. Errors: `{"is_end":true,"is_final":false,"error"}`,
then close 1008.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from websockets.exceptions import ConnectionClosed

from .. import validate
from ..protocol import SAMPLE_RATES, Error, Final, Partial, ServerMessage
from ..telephony.runner import SessionRunner
from .common import Outbox, dumps, next_frame

__all__ = ["FunasrConfig", "FunasrError", "parse_config", "handle_funasr"]

log = logging.getLogger("tingxie.compat")

MODES = ("online", "offline", "2pass")


class FunasrError(ValueError):
    pass


@dataclass(frozen=True)
class FunasrConfig:
    mode: str = "2pass"
    wav_name: str = "demo"
    audio_fs: int = 16000
    chunk_size: tuple[int, ...] = (5, 10, 5)
    hotwords: dict[str, Any] | None = None
    itn: bool = True


def _chunk_size(value: Any) -> tuple[int, ...]:
    parts = value.split(",") if isinstance(value, str) else value
    if not isinstance(parts, (list, tuple)) or len(parts) != 3:
        raise FunasrError("chunk_size has three non-negative numbers, e.g. [5, 10, 5]")
    try:
        return tuple(validate.integer("chunk_size", p, 0, 1000) for p in parts)
    except validate.FieldError as e:
        raise FunasrError(f"{e} (chunk_size has three numbers, e.g. [5, 10, 5])") from None


def parse_config(obj: dict[str, Any], base: FunasrConfig | None = None) -> FunasrConfig:
    b = base or FunasrConfig()
    try:
        mode = obj.get("mode", b.mode)
        if not isinstance(mode, str) or mode not in MODES:
            raise FunasrError(f"mode must be online, offline or 2pass, not {validate.shown(mode)}")
        fs = validate.integer("audio_fs", obj.get("audio_fs", b.audio_fs), SAMPLE_RATES[0], SAMPLE_RATES[1])
        fmt = validate.text("wav_format", obj.get("wav_format", "pcm"), 20).lower()
        if fmt not in ("pcm", "wav"):
            raise FunasrError("ERROR. Real-time transcription service ONLY SUPPORT PCM stream.")
        hot = obj.get("hotwords", None)
        if isinstance(hot, str) and hot.strip():
            try:
                hot = validate.loads(hot)
            except validate.FieldError:
                hot = {w: 0 for w in hot.split()}  # older clients: space-separated words
        wav_name = validate.text("wav_name", obj.get("wav_name", b.wav_name), 200, numbers=True)
        itn = obj.get("itn", b.itn)
    except validate.FieldError as e:
        raise FunasrError(str(e)) from None
    return FunasrConfig(mode, wav_name, fs, _chunk_size(obj["chunk_size"]) if "chunk_size" in obj else b.chunk_size,
                        hot if isinstance(hot, dict) else b.hotwords, bool(itn))


def _delta(sent: str, text: str) -> str:
    i = 0
    while i < min(len(sent), len(text)) and sent[i] == text[i]:
        i += 1
    return text[i:]


class _Segment:
    """One is_speaking segment: a session plus what has been sent of it."""

    def __init__(self, integ: Any, cfg: FunasrConfig, out: Outbox) -> None:
        self.cfg, self.out = cfg, out
        self.sent: dict[int, str] = {}
        self.offline: list[Final] = []
        start: dict[str, Any] = {"sample_rate": cfg.audio_fs, "itn": cfg.itn}
        text = getattr(integ.app, "text", None)
        if cfg.hotwords and text is not None:  # FunASR clients send lists freely: keep what the model can spell
            words = [str(w) for w in cfg.hotwords if text.spellable(str(w))]
            if words:
                start["hotwords"] = words[: text.limits.max_phrases]
        self.runner = SessionRunner(integ.app, integ.new_id(), start, self.on_message)

    def _msg(self, mode: str, text: str, **kw: Any) -> None:
        self.out.send(dumps({"mode": mode, "wav_name": self.cfg.wav_name, "text": text, "is_final": False, **kw}))

    def on_message(self, msg: ServerMessage) -> None:
        mode = self.cfg.mode
        if isinstance(msg, Partial) and mode != "offline":
            d = _delta(self.sent.get(msg.channel, ""), msg.text)
            if d:
                self._msg("online" if mode == "online" else "2pass-online", d)
            self.sent[msg.channel] = msg.text
        elif isinstance(msg, Final):
            sent = self.sent.pop(msg.channel, "")
            if mode == "offline":
                self.offline.append(msg)
            elif mode == "online":
                if d := _delta(sent, msg.text):
                    self._msg("online", d)
            else:
                self._msg("2pass-offline", msg.text, **_times([msg]))
        elif isinstance(msg, Error):
            self.out.send(dumps({"mode": mode, "wav_name": self.cfg.wav_name, "is_end": True, "is_final": False,
                                 "error": msg.message}))

    def flush_offline(self) -> None:
        if self.cfg.mode == "offline":
            self._msg("offline", "".join(f.text for f in self.offline), **_times(self.offline))


def _times(finals: list[Final]) -> dict[str, Any]:
    stamps = [[int(round(t.start * 1000)), int(round(t.end * 1000))] for f in finals for t in f.tokens]
    if not finals:
        return {"timestamp": "[]"}
    return {"start_time": int(round(finals[0].start * 1000)), "end_time": int(round(finals[-1].end * 1000)),
            "timestamp": json.dumps(stamps)}


async def handle_funasr(integ: Any, ws: Any) -> None:
    out = Outbox(ws)
    cfg: FunasrConfig | None = None
    seg: _Segment | None = None

    async def fail(message: str) -> None:
        out.send(dumps({"mode": cfg.mode if cfg else "", "wav_name": cfg.wav_name if cfg else "", "is_end": True,
                        "is_final": False, "error": message}))
        await out.close(1008, "bad request")

    try:
        while True:
            try:
                frame = await next_frame(ws, integ.app.settings.idle_timeout_s)
            except TimeoutError:
                return await fail(f"no message for {integ.app.settings.idle_timeout_s:g} s")
            if isinstance(frame, bytes):
                if cfg is None:
                    continue  # the reference server drops audio until it is configured
                if seg is None:
                    seg = _Segment(integ, cfg, out)
                seg.runner.feed(frame)
                if seg.runner.failed:
                    return await out.close(1008, "bad audio")
                await seg.runner.wait_capacity()
                continue
            try:
                obj = validate.loads(frame)
                if not isinstance(obj, dict):
                    raise validate.FieldError("not an object")
            except validate.FieldError:
                return await fail("messages are JSON objects")
            if seg is None and set(obj) - {"is_speaking", "is_end"}:
                try:
                    cfg = parse_config(obj, cfg)
                except FunasrError as e:
                    return await fail(str(e))
            speaking = obj.get("is_speaking", True)
            if speaking is False or obj.get("is_end") is True:
                if seg is not None:
                    seg.runner.end()
                    await seg.runner.wait(integ.app.settings.shutdown_timeout_s + 60)
                    if seg.runner.failed:
                        return await out.close(1011)
                    seg.flush_offline()
                    seg = None
                if obj.get("is_end") is True:
                    out.send(dumps({"mode": cfg.mode if cfg else "", "wav_name": cfg.wav_name if cfg else "",
                                    "is_end": True, "is_final": True}))
                    return await out.close(1000)
    except ConnectionClosed:
        pass
    finally:
        if seg is not None and not seg.runner.done:
            seg.runner.abort()
        await out.stop()
