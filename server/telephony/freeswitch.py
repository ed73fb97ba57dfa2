"""FreeSWITCH mod_audio_fork (subprotocol `audio.drachtio.org`) and mod_audio_stream at
`/freeswitch`.

Wire: the first TEXT frame is the metadata given to `uuid_audio_fork/uuid_audio_stream
... start` (any UTF-8; JSON objects are read for the settings below), then BINARY raw
s16 little-endian, no header, frames of any size. mono/mixed = one channel; stereo =
sample-interleaved, LEFT = what the leg receives (read: the customer on an inbound leg),
RIGHT = what it sends (write: the agent). A ZERO-LENGTH binary frame (mod_audio_fork's
`graceful-shutdown`) means "flush finals now": the finals are sent, then the socket is
closed normally.

The start command's rate and mix are not sent on the wire, so they come from the URL
(`/freeswitch?rate=8000&mix=stereo&call_id=...`) or from JSON metadata (`sampleRate`,
`mixType`, `callId`/`uuid`); defaults: 8000, mono.

Results go back in-band as TEXT frames `{"type":"transcription","data":{event}}` (fired
as `mod_audio_fork::transcription` / `mod_audio_stream::json` events for ESL apps) and
to subscribers. Errors: `{"type":"error","data":{"code","message"}}`, then close 1008.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any, Mapping

from websockets.exceptions import ConnectionClosed

from .. import validate
from .calls import Call, CallIdInUse
from .runner import SessionRunner

__all__ = ["FREESWITCH_PATH", "SUBPROTOCOL", "ForkConfig", "fork_config", "handle_freeswitch"]

log = logging.getLogger("tingxie.telephony")

FREESWITCH_PATH = "/freeswitch"
SUBPROTOCOL = "audio.drachtio.org"
MIXES = ("mono", "mixed", "stereo")


class ForkError(ValueError):
    pass


@dataclass(frozen=True)
class ForkConfig:
    sample_rate: int = 8000
    mix: str = "mono"
    call_id: str | None = None

    @property
    def channels(self) -> int:
        return 2 if self.mix == "stereo" else 1

    def roles(self) -> dict[int, str]:
        return {0: "customer", 1: "agent"} if self.mix == "stereo" else {0: "mixed" if self.mix == "mixed" else "customer"}


def _rate(value: Any) -> int:
    try:
        text = validate.text("sample rate", value, 12, numbers=True).strip().lower()
        rate = validate.integer("sample rate", text[:-1]) * 1000 if text.endswith("k") else validate.integer("sample rate", text)
    except validate.FieldError:
        raise ForkError(f"bad sample rate {validate.shown(value)}") from None
    if rate % 8000 or not 8000 <= rate <= 48000:
        raise ForkError(f"sample rate {rate}: use a multiple of 8000 up to 48000")
    return rate


def fork_config(query: Mapping[str, str], metadata: Any) -> ForkConfig:
    """The stream's settings from the URL query, overridden by JSON metadata keys."""
    rate, mix, call_id = query.get("rate") or query.get("sample_rate"), query.get("mix"), query.get("call_id")
    try:
        if isinstance(metadata, dict):
            rate = metadata.get("sampleRate", metadata.get("sample_rate", rate))
            mix = metadata.get("mixType", metadata.get("mix", mix))
            for key in ("callId", "call_id", "uuid", "callSid", "callUuid"):
                if metadata.get(key):
                    call_id = validate.text(key, metadata[key], 200, numbers=True)
                    break
        mix = validate.text("mix", mix or "mono", 20).lower()
        if call_id is not None:
            call_id = validate.text("call_id", call_id, 200)
    except validate.FieldError as e:
        raise ForkError(str(e)) from None
    if mix not in MIXES:
        raise ForkError(f"bad mix {mix[:20]!r}: use mono, mixed or stereo")
    return ForkConfig(_rate(rate) if rate is not None else 8000, mix, call_id or None)


def parse_metadata(text: str) -> Any:
    try:
        return validate.loads(text)
    except validate.FieldError:
        return text  # plain text metadata is fine


async def handle_freeswitch(integ: Any, ws: Any, query: Mapping[str, str]) -> None:
    outbox: asyncio.Queue[str | None] = asyncio.Queue()

    async def sender() -> None:
        try:
            while (item := await outbox.get()) is not None:
                await ws.send(item)
        except ConnectionClosed:
            pass

    def in_band(event: dict[str, Any]) -> None:
        if event.get("type") in ("partial", "final", "dtmf"):
            outbox.put_nowait(json.dumps({"type": "transcription", "data": event}, ensure_ascii=False))
        elif event.get("type") == "error":
            outbox.put_nowait(json.dumps({"type": "error", "data": {"code": event["code"], "message": event["message"]}}))

    send_task = asyncio.create_task(sender())
    call: Call | None = None
    runner: SessionRunner | None = None
    reason, close = "hangup", None
    try:
        first: Any = None
        metadata: Any = None
        try:
            async with asyncio.timeout(integ.app.settings.idle_timeout_s):
                first = await ws.recv()
        except TimeoutError:
            reason, close = "idle", 1008
            return
        if isinstance(first, str):
            metadata, first = parse_metadata(first), None
        try:
            cfg = fork_config(query, metadata)
        except ForkError as e:
            in_band({"type": "error", "code": "bad_config", "message": str(e)})
            reason, close = "error", 1008
            return
        try:
            call = Call(integ.hub, cfg.call_id or integ.new_id(), "freeswitch",
                        {"metadata": metadata, "sample_rate": cfg.sample_rate, "mix": cfg.mix}, in_band=in_band)
        except CallIdInUse as e:
            in_band({"type": "error", "code": "bad_config", "message": str(e)})
            reason, close = "error", 1008
            return
        roles = cfg.roles()
        runner = SessionRunner(integ.app, call.id, {"sample_rate": cfg.sample_rate, "encoding": "pcm_s16le",
                                                    "channels": cfg.channels},
                               call.handler(0, roles[0], roles if cfg.channels > 1 else None))
        frames = [first] if first is not None else []
        while True:
            if frames:
                frame = frames.pop()
            else:
                try:
                    async with asyncio.timeout(integ.app.settings.idle_timeout_s):
                        frame = await ws.recv()
                except TimeoutError:
                    in_band({"type": "error", "code": "idle_timeout",
                             "message": f"no audio for {integ.app.settings.idle_timeout_s:g} s"})
                    reason, close = "idle", 1008
                    break
            if isinstance(frame, str):
                log.info("freeswitch %s: text frame ignored", call.id)
                continue
            if not frame:  # graceful-shutdown: flush finals, then close
                reason, close = "flush", 1000
                break
            runner.feed(frame)
            if runner.failed:
                reason, close = "error", 1008
                break
            await runner.wait_capacity()
    except ConnectionClosed:
        pass
    finally:
        if call is not None and runner is not None:
            await integ.finish_call(call, [runner], reason)
        outbox.put_nowait(None)
        await asyncio.gather(send_task, return_exceptions=True)
        if close is not None:
            await ws.close(close)
