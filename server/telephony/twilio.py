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

import asyncio
import base64
import binascii
import logging
from dataclasses import dataclass, field
from typing import Any

from websockets.exceptions import ConnectionClosed

from .. import validate
from ..auth import key_ok
from ..errors import HandshakeRefused
from .calls import Call, CallIdInUse
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
    t = validate.text("track", name or "inbound", 40)
    t = t[: -len("_track")] if t.endswith("_track") else t
    if t not in TRACKS:
        raise TwilioError(f"unknown track {t[:40]!r}")
    return t


def _object(name: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TwilioError(f"{name} must be an object")
    return value


def parse_event(frame: str | bytes) -> Connected | StartEvent | Media | Dtmf | Mark | Stop | None:
    """One text frame (str, or its undecoded bytes) as an event (None for events without
    meaning here). Anything malformed raises TwilioError, never another exception."""
    try:
        obj = validate.loads(frame)
    except validate.FieldError as e:
        raise TwilioError(str(e)) from None
    if not isinstance(obj, dict):
        raise TwilioError("not a JSON object")
    kind = obj.get("event")
    try:
        if kind == "connected":
            return Connected()
        if kind == "start":
            st = _object("start", obj.get("start"))
            fmt = _object("mediaFormat", st.get("mediaFormat"))
            if fmt and (fmt.get("encoding", "audio/x-mulaw") != "audio/x-mulaw"
                        or validate.integer("sampleRate", fmt.get("sampleRate", RATE)) != RATE):
                raise TwilioError(f"unsupported media format {validate.shown(fmt)}")
            sid = validate.text("streamSid", st.get("streamSid") or obj.get("streamSid") or "", 200)
            tracks = st.get("tracks") or ["inbound"]
            if not isinstance(tracks, list) or len(tracks) > len(TRACKS):
                raise TwilioError("tracks must be a list of track names")
            custom = _object("customParameters", st.get("customParameters"))
            return StartEvent(sid, validate.text("callSid", st.get("callSid") or "", 200),
                              tuple(dict.fromkeys(_track(t) for t in tracks)), custom,
                              validate.text("accountSid", st.get("accountSid") or "", 200))
        if kind == "media":
            m = _object("media", obj.get("media"))
            payload = validate.text("payload", m.get("payload"), 1 << 20)
            if not payload.isascii():
                raise TwilioError("payload must be base64")
            timestamp = m.get("timestamp")
            return Media(_track(m.get("track")), None if timestamp is None else validate.integer("timestamp", timestamp, 0),
                         base64.b64decode(payload, validate=True))
        if kind == "dtmf":
            d = _object("dtmf", obj.get("dtmf"))
            digit = validate.text("digit", d.get("digit"), 1, numbers=True)
            if len(digit) != 1:
                raise TwilioError("a DTMF digit is one character")
            return Dtmf(_track(d.get("track")), digit)
        if kind == "mark":
            return Mark(validate.text("name", _object("mark", obj.get("mark")).get("name", ""), 200, numbers=True))
        if kind == "stop":
            return Stop()
    except (validate.FieldError, binascii.Error) as e:
        raise TwilioError(f"malformed {validate.shown(kind)} event: {e}") from None
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
    app = integ.app
    call: Call | None = None
    runners: dict[str, SessionRunner] = {}
    timeline = TrackTimeline()
    reason, close = "hangup", None
    bad = 0

    def runner(track: str) -> SessionRunner:
        if track not in runners:
            role = integ.twilio_roles[track]
            runners[track] = SessionRunner(app, f"{call.id}:{track}", {"sample_rate": RATE, "encoding": "mulaw"},
                                           call.handler(TRACKS.index(track), role))
        return runners[track]

    try:
        while True:
            try:
                async with asyncio.timeout(app.settings.idle_timeout_s):
                    # Undecoded: a frame that is not UTF-8 is one bad message, not the end
                    # of the call (websockets would fail the connection with 1007).
                    frame = await ws.recv(decode=False)
            except TimeoutError:
                log.info("twilio %s: no message for %g s", call.id if call else "?", app.settings.idle_timeout_s)
                reason, close = "idle", 1008
                break
            try:
                ev = parse_event(frame)
            except TwilioError as e:
                bad += 1
                log.warning("twilio %s: skipped a message: %s", call.id if call else "?", e)
                app.metrics.errors.labels(code="twilio_bad_message").inc()
                continue
            if isinstance(ev, StartEvent):
                if call is not None:
                    log.warning("twilio %s: a second start is ignored", call.id)
                    continue
                if not app.has_slot(ws):  # not authorised at the handshake: the key, then a slot
                    if not key_ok(str(ev.custom.get("api_key", "")), app.settings.api_key):
                        app.metrics.rejected.labels(status="401").inc()
                        close = 1008
                        break
                    try:
                        app.take_slot(ws)
                    except HandshakeRefused as e:
                        app.metrics.rejected.labels(status=str(e.status.value)).inc()
                        close = 1013
                        break
                try:
                    call = Call(integ.hub, ev.call_sid or ev.stream_sid or integ.new_id(), "twilio",
                                {"streamSid": ev.stream_sid, "callSid": ev.call_sid, "accountSid": ev.account_sid,
                                 "tracks": list(ev.tracks), "customParameters": ev.custom}, aliases=(ev.stream_sid,))
                except CallIdInUse as e:
                    log.warning("twilio: %s: closing", e)
                    close = 1008
                    break
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
                reason, close = "stop", 1000
                break
    except ConnectionClosed:
        pass
    finally:
        if call is not None:
            await integ.finish_call(call, list(runners.values()), reason)
    if close is not None:
        await ws.close(close, {1000: "", 1008: "unauthorized or idle", 1013: "busy"}.get(close, ""))
