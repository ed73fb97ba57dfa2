"""Asterisk AudioSocket over TCP, driven by an emulator writing kind/length/payload
frames: UUID first, slin 8 kHz (0x10) or 16 kHz (0x12) in 20 ms frames, DTMF (0x03),
hangup (0x00); a listener told that 0x10 carries A-law or μ-law."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from asr import g711
from asr.recognizer import Recognizer
from server.telephony.audiosocket import HANGUP, FrameReader, audiosocket_frame

from .callhelpers import TEXTS, finals, running, speech, subscribe
from .conftest import needs_espeak

pytestmark = needs_espeak


@pytest.fixture(scope="module")
def rec(random_model_dir):
    return Recognizer.from_dir(random_model_dir, device="cpu")


async def call(port: int, call_id: uuid.UUID, kind: int, data: bytes, frame: int, hangup: bool = True,
               dtmf: str = "") -> bytes:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(audiosocket_frame(0x01, call_id.bytes))
    for d in dtmf:
        w.write(audiosocket_frame(0x03, d.encode()))
    for i in range(0, len(data), frame):
        w.write(audiosocket_frame(kind, data[i : i + frame]))
        await w.drain()
    if hangup:
        w.write(b"\x00\x00\x00")
        await w.drain()
        back = await asyncio.wait_for(r.read(), 10)  # Asterisk-side: wait for the close
    else:
        w.transport.abort()  # TCP reset mid-utterance
        back = b""
    w.close()
    return back


@pytest.mark.parametrize("law", ["alaw", "ulaw"])
async def test_g711_as_0x10_with_listener_override(rec, tmp_path, law):
    pcm = speech(tmp_path, TEXTS[0], 8000)
    enc, dec = (g711.alaw_encode, g711.alaw_decode) if law == "alaw" else (g711.mulaw_encode, g711.mulaw_decode)
    codes = enc(pcm)
    cid = uuid.uuid4()
    async with running(rec, audiosocket_port=0, audiosocket_format=law) as app:
        sub, _ = await subscribe(app, str(cid))
        back = await call(app.integrations.ports["audiosocket"], cid, 0x10, codes.tobytes(), 160, dtmf="5#")
        events = await asyncio.wait_for(sub, 10)
    assert back == b""  # we never send anything on a good call
    assert finals(events, "customer") == [rec.transcribe(dec(codes), 8000).text]
    assert [e["digit"] for e in events if e["type"] == "dtmf"] == ["5", "#"]
    assert events[-1]["type"] == "call_end" and events[-1]["call_id"] == str(cid)


async def test_slin16_hangup_mid_utterance_reaches_subscribers(rec, tmp_path):
    pcm = speech(tmp_path, TEXTS[1], 16000)
    part = pcm[: pcm.size // 2]
    cid = uuid.uuid4()
    async with running(rec, audiosocket_port=0) as app:
        sub, _ = await subscribe(app, str(cid))
        await call(app.integrations.ports["audiosocket"], cid, 0x12, part.astype("<i2").tobytes(), 640, hangup=False)
        events = await asyncio.wait_for(sub, 10)
    assert finals(events) == [rec.transcribe(part, 16000).text]
    assert events[-1]["reason"] == "hangup"


async def test_slin8_and_malformed_frames(rec, tmp_path):
    pcm = speech(tmp_path, TEXTS[2], 8000)
    cid = uuid.uuid4()
    async with running(rec, audiosocket_port=0) as app:
        port = app.integrations.ports["audiosocket"]
        # A UUID of the wrong size: we hang up (00 00 00) and close.
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(audiosocket_frame(0x01, b"short"))
        await w.drain()
        assert await asyncio.wait_for(r.read(), 5) == HANGUP
        w.close()
        # Unknown kinds and an Asterisk error frame end nothing badly; the server goes on.
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(audiosocket_frame(0x01, uuid.uuid4().bytes) + audiosocket_frame(0x42, b"??") + audiosocket_frame(0xFF, b"\x02"))
        await w.drain()
        assert await asyncio.wait_for(r.read(), 5) == b""
        w.close()
        sub, _ = await subscribe(app, str(cid))
        await call(port, cid, 0x10, pcm.astype("<i2").tobytes(), 320)
        events = await asyncio.wait_for(sub, 10)
    assert finals(events) == [rec.transcribe(pcm, 8000).text]


def test_frame_reader_any_split():
    data = audiosocket_frame(0x01, bytes(16)) + audiosocket_frame(0x10, b"\x01\x02" * 5) + HANGUP
    frames = []
    reader = FrameReader()
    for i in range(len(data)):
        frames += reader.feed(data[i : i + 1])
    assert [(f.kind, len(f.payload)) for f in frames] == [(1, 16), (0x10, 10), (0, 0)] and reader.pending == 0
