"""Twilio Media Streams (`<Start><Stream>` forks and `<Connect><Stream>`) at `/twilio`.

Sans-I/O part: `parse_event` (one JSON text frame -> a typed event, `TwilioError` for
anything malformed) and `TrackTimeline` (places each track's μ-law payloads at
`media.timestamp`, filling gaps with silence so both tracks share one time axis).
The async part runs one `SessionRunner` per track (`inbound` = the caller, `outbound`
= what the caller hears; roles configurable) and publishes results to subscribers at
`/v1/calls/{callSid}/events` (Twilio reads nothing back on a fork).

Counters (`sequenceNumber`, `chunk`, `timestamp`) are strings on the wire. A malformed
message is logged and skipped: one bad frame must not cost the call its transcript.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from websockets.exceptions import ConnectionClosed

from .calls import Call
from .runner import SessionRunner

__all__ = ["TWILIO_PATH", "TwilioError", "parse_event", "TrackTimeline", "Connected", "StartEvent", "Media",
           "Dtmf", "Mark", "Stop", "handle_twilio"]

log = logging.getLogger("tingxie.telephony")

TWILIO_PATH = "/twilio"
RATE = 8000
MULAW_SILENCE = 0xFF
MAX_GAP_S = 30.0  # a larger timestamp jump is treated as a clock reset, not filled
TRACKS = ("inbound", "outbound")


class TwilioError(ValueError):
    pass


@dataclass(frozen=True)
class Connected:
    pass


@dataclass(frozen=True)
class StartEvent:
    stream_sid: str
    call_sid: str
    tracks: tuple[str, ...]
    custom: dict[str, Any] = field(default_factory=dict)
    account_sid: str = ""


@dataclass(frozen=True)
class Media:
    track: str
    timestamp_ms: int | None
    payload: bytes


@dataclass(frozen=True)
class Dtmf:
    track: str
    digit: str


@dataclass(frozen=True)
class Mark:
    name: str


@dataclass(frozen=True)
class Stop:
    pass


def _track(name: Any) -> str:
    t = str(name or "inbound")
    t = t[: -len("_track")] if t.endswith("_track") else t
    if t not in TRACKS:
        raise TwilioError(f"unknown track {t[:40]!r}")
    return t


def _counter(value: Any) -> int | None:
    """A counter sent as a string ("5"); integers are accepted too."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise TwilioError("counters are strings of digits")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    raise TwilioError(f"bad counter {str(value)[:40]!r}")


def parse_event(frame: str | bytes) -> Connected | StartEvent | Media | Dtmf | Mark | Stop | None:
    """One text frame as an event (None for events without meaning here)."""
    if not isinstance(frame, str):
        raise TwilioError("binary frames are not part of Media Streams")
    try:
        obj = json.loads(frame)
    except (ValueError, RecursionError):
        raise TwilioError("not JSON") from None
    if not isinstance(obj, dict):
        raise TwilioError("not a JSON object")
    kind = obj.get("event")
    try:
        if kind == "connected":
            return Connected()
        if kind == "start":
            st = obj.get("start") or {}
            fmt = st.get("mediaFormat") or {}
            if fmt and (fmt.get("encoding", "audio/x-mulaw") != "audio/x-mulaw" or int(fmt.get("sampleRate", RATE)) != RATE):
                raise TwilioError(f"unsupported media format {json.dumps(fmt)[:80]}")
            sid = str(st.get("streamSid") or obj.get("streamSid") or "")
            tracks = tuple(_track(t) for t in (st.get("tracks") or ["inbound"]))
            custom = st.get("customParameters") or {}
            return StartEvent(sid, str(st.get("callSid") or ""), tracks, custom if isinstance(custom, dict) else {},
                              str(st.get("accountSid") or ""))
        if kind == "media":
            m = obj["media"]
            payload = base64.b64decode(m["payload"], validate=True)
            return Media(_track(m.get("track")), _counter(m.get("timestamp")), payload)
        if kind == "dtmf":
            d = obj["dtmf"]
            digit = str(d["digit"])
            if len(digit) != 1:
                raise TwilioError("a DTMF digit is one character")
            return Dtmf(_track(d.get("track")), digit)
        if kind == "mark":
            return Mark(str((obj.get("mark") or {}).get("name", "")))
        if kind == "stop":
            return Stop()
    except (KeyError, TypeError, binascii.Error) as e:
        raise TwilioError(f"malformed {kind} event: {type(e).__name__}") from None
    if kind is None:
        raise TwilioError('no "event"')
    return None  # clear, and events added later


class TrackTimeline:
    """Samples written per track; `place` returns the silence (μ-law bytes) to insert
    before a payload stamped `timestamp_ms`, so that it lands at its time."""

    def __init__(self) -> None:
        self.written: dict[str, int] = {}

    def place(self, track: str, timestamp_ms: int | None, n: int) -> bytes:
        at = self.written.get(track, 0)
        gap = 0
        if timestamp_ms is not None:
            gap = timestamp_ms * RATE // 1000 - at
            if gap < 0 or gap > MAX_GAP_S * RATE:
                gap = 0  # jitter or a reset: keep the audio, do not reorder
        self.written[track] = at + gap + n
        return bytes([MULAW_SILENCE]) * gap

    def seconds(self, track: str) -> float:
        return self.written.get(track, 0) / RATE


async def handle_twilio(integ: Any, ws: Any) -> None:
    """Drive one Media Streams websocket until `stop` or the socket closes."""
    call: Call | None = None
    runners: dict[str, SessionRunner] = {}
    timeline = TrackTimeline()
    reason = "hangup"
    bad = 0

    def runner(track: str) -> SessionRunner:
        if track not in runners:
            role = integ.twilio_roles[track]
            runners[track] = SessionRunner(integ.app, f"{call.id}:{track}", {"sample_rate": RATE, "encoding": "mulaw"},
                                           call.handler(TRACKS.index(track), role))
        return runners[track]

    try:
        async for frame in ws:
            try:
                ev = parse_event(frame)
            except TwilioError as e:
                bad += 1
                log.warning("twilio %s: skipped a message: %s", call.id if call else "?", e)
                integ.app.metrics.errors.labels(code="twilio_bad_message").inc()
                continue
            if isinstance(ev, StartEvent):
                if call is not None:
                    log.warning("twilio %s: a second start is ignored", call.id)
                    continue
                if integ.app.settings.api_key:
                    given = str(ev.custom.get("api_key", ""))
                    if not any(hmac.compare_digest(given.encode(), k.encode()) for k in integ.app.settings.api_key):
                        await ws.close(1008, "unauthorized")
                        return
                call = Call(integ.hub, ev.call_sid or ev.stream_sid or integ.new_id(), "twilio",
                            {"streamSid": ev.stream_sid, "callSid": ev.call_sid, "accountSid": ev.account_sid,
                             "tracks": list(ev.tracks), "customParameters": ev.custom}, aliases=(ev.stream_sid,))
                for t in ev.tracks:
                    runner(t)
            elif isinstance(ev, Media):
                if call is None:
                    bad += 1
                    log.warning("twilio: media before start: skipped")
                    continue
                r = runner(ev.track)
                r.feed(timeline.place(ev.track, ev.timestamp_ms, len(ev.payload)) + ev.payload)
                await r.wait_capacity()
            elif isinstance(ev, Dtmf) and call is not None:
                call.dtmf(ev.digit, integ.twilio_roles[ev.track], timeline.seconds(ev.track))
            elif isinstance(ev, Stop):
                reason = "stop"
                break
    except ConnectionClosed:
        pass
    finally:
        if call is not None:
            await integ.finish_call(call, list(runners.values()), reason)
    if reason == "stop":
        await ws.close(1000)
