"""FreeSWITCH mod_audio_fork / mod_audio_stream at /freeswitch, driven by an emulator:
subprotocol audio.drachtio.org, a metadata TEXT frame (JSON or not), raw L16 LE in
frames of any size, stereo LEFT = read (customer) / RIGHT = write (agent), and the
zero-length binary frame of `graceful-shutdown`."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from websockets.asyncio.client import connect

from asr.recognizer import Recognizer
from server.telephony.freeswitch import ForkError, fork_config

from .callhelpers import TEXTS, finals, read_all, running, speech, subscribe, ws_url
from .conftest import needs_espeak

pytestmark = needs_espeak


@pytest.fixture(scope="module")
def rec(random_model_dir):
    return Recognizer.from_dir(random_model_dir, device="cpu")


def stereo(left: np.ndarray, right: np.ndarray) -> bytes:
    n = max(left.size, right.size)
    left, right = np.pad(left, (0, n - left.size)), np.pad(right, (0, n - right.size))
    return np.stack([left, right], axis=1).astype("<i2").tobytes()


async def test_audio_fork_stereo_in_band_results_and_flush(rec, tmp_path):
    left, right = speech(tmp_path, TEXTS[0], 8000), speech(tmp_path, TEXTS[1], 8000)
    data = stereo(left, right)
    async with running(rec) as app:
        async with connect(ws_url(app, "/freeswitch?rate=8000&mix=stereo&call_id=leg-1"),
                           subprotocols=["audio.drachtio.org"]) as ws:
            assert ws.subprotocol == "audio.drachtio.org"
            await ws.send("caller=+8613800000000 queue=billing")  # metadata need not be JSON
            sizes = [333, 640, 17, 2000, 1]  # whatever accumulated, even odd sizes
            i = k = 0
            while i < len(data):
                await ws.send(data[i : i + sizes[k % len(sizes)]])
                i += sizes[k % len(sizes)]
                k += 1
            await ws.send(b"")  # graceful-shutdown: flush finals now
            msgs = await asyncio.wait_for(read_all(ws), 15)
            assert ws.close_code == 1000
    events = [m["data"] for m in msgs if m["type"] == "transcription"]
    assert all(e["call_id"] == "leg-1" for e in events)
    assert finals(events, "customer") == [rec.transcribe(left, 8000).text]
    padded = np.pad(right, (0, left.size - right.size)) if right.size < left.size else right
    assert finals(events, "agent") == [rec.transcribe(padded, 8000).text]
    assert {e["channel"] for e in events if e["type"] == "final"} == {0, 1}


async def test_audio_stream_mono_16k_hangup_reaches_subscribers(rec, tmp_path):
    pcm = speech(tmp_path, TEXTS[2], 16000)
    part = pcm[: pcm.size * 2 // 3]
    async with running(rec) as app:
        sub, _ = await subscribe(app, "uuid-42")
        ws = await connect(ws_url(app, "/freeswitch"))  # mod_audio_stream: no subprotocol
        await ws.send(json.dumps({"uuid": "uuid-42", "sampleRate": 16000, "mixType": "mono"}))
        raw = part.astype("<i2").tobytes()
        for i in range(0, len(raw), 640):  # 20 ms frames at 16 kHz
            await ws.send(raw[i : i + 640])
        ws.transport.abort()  # the leg hangs up mid-utterance
        events = await asyncio.wait_for(sub, 15)
    assert finals(events, "customer") == [rec.transcribe(part, 16000).text]
    assert events[-1]["type"] == "call_end" and events[-1]["reason"] == "hangup"


@pytest.mark.parametrize("path, metadata", [
    ("/freeswitch?rate=11025", "x"),
    ("/freeswitch", '{"sampleRate": "fast"}'),
    ("/freeswitch?mix=quad", "x"),
])
async def test_bad_configuration_errors_in_band_then_1008(rec, path, metadata):
    async with running(rec) as app:
        async with connect(ws_url(app, path), subprotocols=["audio.drachtio.org"]) as ws:
            await ws.send(metadata)
            msgs = await asyncio.wait_for(read_all(ws), 5)
        assert ws.close_code == 1008
        assert msgs[0]["type"] == "error" and msgs[0]["data"]["code"] == "bad_config"
        async with connect(ws_url(app, "/freeswitch")) as ws:  # the server is still fine
            await ws.send("meta")
            await ws.send(b"\x00\x00" * 800)
            await ws.send(b"")
            await asyncio.wait_for(read_all(ws), 5)
        assert ws.close_code == 1000


def test_fork_config():
    assert fork_config({"rate": "16k", "mix": "stereo"}, "plain").channels == 2
    assert fork_config({}, {"sampleRate": 24000, "callId": "c"}).sample_rate == 24000
    assert fork_config({}, None).roles() == {0: "customer"}
    with pytest.raises(ForkError):
        fork_config({"rate": "64000"}, None)
