"""Twilio Media Streams at /twilio, driven by an emulator that writes the documented
messages byte for byte (string counters, base64 μ-law, 20 ms frames, both tracks)."""

from __future__ import annotations

import asyncio
import base64
import json
import urllib.request

import numpy as np
import pytest
from websockets.asyncio.client import connect

from asr import g711
from asr.recognizer import Recognizer
from server.telephony.twilio import TrackTimeline, TwilioError, parse_event

from .callhelpers import TEXTS, finals, running, speech, subscribe, ws_url
from .conftest import needs_espeak

pytestmark = needs_espeak

CALL, STREAM = "CA0123456789abcdef0123456789abcdef", "MZ0123456789abcdef0123456789abcdef"


@pytest.fixture(scope="module")
def rec(random_model_dir):
    return Recognizer.from_dir(random_model_dir, device="cpu")


class TwilioEmulator:
    """What Twilio sends on a `<Start><Stream track="both_tracks">` fork."""

    def __init__(self, ws):
        self.ws, self.seq, self.chunks = ws, 0, {"inbound": 0, "outbound": 0}

    async def send(self, obj: dict) -> None:
        self.seq += 1
        if obj["event"] != "connected":
            obj = {"event": obj["event"], "sequenceNumber": str(self.seq), **{k: v for k, v in obj.items() if k != "event"}}
        await self.ws.send(json.dumps(obj))

    async def start(self, tracks=("inbound", "outbound"), params=None):
        await self.ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        await self.send({"event": "start", "streamSid": STREAM, "start": {
            "streamSid": STREAM, "accountSid": "AC00", "callSid": CALL, "tracks": list(tracks),
            "customParameters": params or {}, "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}})

    async def media(self, track: str, timestamp_ms: int, codes: bytes) -> None:
        self.chunks[track] += 1
        await self.send({"event": "media", "streamSid": STREAM, "media": {
            "track": track, "chunk": str(self.chunks[track]), "timestamp": str(timestamp_ms),
            "payload": base64.b64encode(codes).decode()}})

    async def play(self, tracks: dict[str, tuple[np.ndarray, int, set[int]]]) -> None:
        """tracks: name -> (μ-law codes, start ms, indices of 20 ms frames to drop);
        frames are sent in timestamp order, both tracks interleaved."""
        events = []
        for name, (codes, start_ms, drop) in tracks.items():
            for i in range(0, len(codes), 160):
                if i // 160 not in drop:
                    events.append((start_ms + i // 8, name, codes[i : i + 160].tobytes()))
        for ts, name, payload in sorted(events, key=lambda e: (e[0], e[1])):
            await self.media(name, ts, payload)


def expected(codes: np.ndarray, start_ms: int, drop: set[int]) -> np.ndarray:
    pcm = g711.mulaw_decode(codes).copy()
    for i in drop:
        pcm[i * 160 : (i + 1) * 160] = 0
    return np.concatenate([np.zeros(start_ms * 8, np.int16), pcm])


async def test_both_tracks_recognised_separately_with_gaps_filled(rec, tmp_path):
    inbound = g711.mulaw_encode(speech(tmp_path, TEXTS[0], 8000))
    outbound = g711.mulaw_encode(speech(tmp_path, TEXTS[1], 8000))
    drop = {30, 31, 32, 50}  # frames lost on the outbound track
    async with running(rec) as app:
        sub, _ = await subscribe(app, CALL)
        by_stream, _ = await subscribe(app, STREAM)
        async with connect(ws_url(app, "/twilio")) as ws:
            tw = TwilioEmulator(ws)
            await tw.start()
            await ws.send("{not json")  # skipped, the call goes on
            await tw.send({"event": "media", "streamSid": STREAM, "media": {"track": "inbound", "timestamp": "0", "payload": "@@@"}})
            await tw.send({"event": "dtmf", "streamSid": STREAM, "dtmf": {"track": "inbound_track", "digit": "7"}})
            await tw.play({"inbound": (inbound, 0, set()), "outbound": (outbound, 600, drop)})
            await tw.send({"event": "mark", "streamSid": STREAM, "mark": {"name": "m1"}})
            await tw.send({"event": "stop", "streamSid": STREAM, "stop": {"accountSid": "AC00", "callSid": CALL}})
            await asyncio.wait_for(ws.wait_closed(), 10)
        events = await asyncio.wait_for(sub, 10)
        assert (await asyncio.wait_for(by_stream, 10)) == events  # the streamSid is an alias
        health = json.loads((await asyncio.to_thread(_get, app.port, "/healthz")))
    assert health["status"] == "ok"
    assert events[0]["type"] == "call_start" and events[0]["metadata"]["streamSid"] == STREAM
    assert events[-1]["type"] == "call_end" and events[-1]["reason"] == "stop"
    assert all(e["call_id"] == CALL for e in events)
    assert finals(events, "customer") and finals(events, "customer") == [rec.transcribe(expected(inbound, 0, set()), 8000).text]
    assert finals(events, "agent") == [rec.transcribe(expected(outbound, 600, drop), 8000).text]
    agent_final = next(e for e in events if e["type"] == "final" and e["role"] == "agent")
    assert agent_final["channel"] == 1 and agent_final["end"] <= (600 + len(outbound) / 8) / 1000 + 0.05
    assert [(e["digit"], e["role"]) for e in events if e["type"] == "dtmf"] == [("7", "customer")]


async def test_hangup_mid_utterance_still_delivers_the_last_final(rec, tmp_path):
    codes = g711.mulaw_encode(speech(tmp_path, TEXTS[2], 8000))
    half = codes[: (len(codes) // 2) // 160 * 160]
    async with running(rec, twilio_roles="inbound=caller") as app:
        sub, _ = await subscribe(app, CALL)
        ws = await connect(ws_url(app, "/twilio"))
        tw = TwilioEmulator(ws)
        await tw.start(tracks=("inbound",))
        await tw.play({"inbound": (half, 0, set())})
        ws.transport.abort()  # the call drops: no stop, no close handshake
        events = await asyncio.wait_for(sub, 10)
    assert finals(events, "caller") == [rec.transcribe(g711.mulaw_decode(half), 8000).text]
    assert events[-1]["type"] == "call_end" and events[-1]["reason"] == "hangup"


async def test_api_key_in_custom_parameters(rec):
    async with running(rec, api_key=("k1",)) as app:
        async with connect(ws_url(app, "/twilio")) as ws:
            await TwilioEmulator(ws).start(params={"api_key": "wrong"})
            await asyncio.wait_for(ws.wait_closed(), 5)
        assert ws.close_code == 1008
        async with connect(ws_url(app, "/twilio")) as ws:
            tw = TwilioEmulator(ws)
            await tw.start(params={"api_key": "k1"})
            await tw.send({"event": "stop", "streamSid": STREAM, "stop": {}})
            await asyncio.wait_for(ws.wait_closed(), 5)
        assert ws.close_code == 1000


def test_parse_event_and_timeline():
    media = parse_event('{"event":"media","sequenceNumber":"3","streamSid":"MZ","media":{"track":"outbound","chunk":"1",'
                        '"timestamp":"5","payload":"/w=="}}')
    assert media.track == "outbound" and media.timestamp_ms == 5 and media.payload == b"\xff"
    assert parse_event('{"event":"dtmf","dtmf":{"track":"inbound_track","digit":"#"}}').digit == "#"
    for bad in ("[]", '{"event":"media"}', '{"event":"media","media":{"track":"sideways","payload":""}}',
                '{"event":"media","media":{"payload":"","timestamp":"x1"}}', b"\x00", '{"nothing":1}'):
        with pytest.raises(TwilioError):
            parse_event(bad)
    t = TrackTimeline()
    assert t.place("inbound", 0, 160) == b""
    assert len(t.place("inbound", 40, 160)) == 160  # one 20 ms frame missing
    assert t.place("inbound", 50, 160) == b""  # late/overlapping: kept, not reordered


def _get(port: int, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return r.read()
