"""WeNet-compatible endpoint: the websocket protocol of WeNet's runtime server, driven by
a client written from it (start signal, int16 PCM, end signal; nbest as a JSON string)."""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from asr.recognizer import Recognizer

from .callhelpers import TEXTS, running, speech, ws_url
from .conftest import needs_espeak

pytestmark = needs_espeak


@pytest.fixture(scope="module")
def rec(random_model_dir):
    return Recognizer.from_dir(random_model_dir, device="cpu")


async def wenet_client(uri: str, pcm: bytes, frame: int | None) -> list[dict]:
    """Like tools/websocket/performance-ws.py (frame=None: the whole file at once) or
    the C++ client (0.5 s chunks); reads until speech_end."""
    out = []
    async with connect(uri) as ws:
        await ws.send(json.dumps({"signal": "start", "nbest": 1, "continuous_decoding": False}))
        out.append(json.loads(await ws.recv()))
        step = frame or len(pcm)
        for i in range(0, len(pcm), step):
            await ws.send(pcm[i : i + step])
        await ws.send(json.dumps({"signal": "end"}))
        while out[-1].get("type") != "speech_end":
            out.append(json.loads(await asyncio.wait_for(ws.recv(), 15)))
    return out


@pytest.mark.parametrize("frame", [None, 16000])
async def test_wenet_client_gets_final_equal_to_transcribe(rec, tmp_path, frame):
    pcm = speech(tmp_path, TEXTS[0], 16000)
    async with running(rec, compat=("wenet=0",)) as app:
        msgs = await wenet_client(f"ws://127.0.0.1:{app.integrations.ports['wenet']}", pcm.tobytes(), frame)
        assert (await wenet_client(ws_url(app, "/wenet"), pcm.tobytes(), frame))[-2] == msgs[-2]
    assert msgs[0] == {"status": "ok", "type": "server_ready"}
    assert msgs[-1] == {"status": "ok", "type": "speech_end"}
    finals = [m for m in msgs if m["type"] == "final_result"]
    assert len(finals) == 1 and isinstance(finals[0]["nbest"], str)
    best = json.loads(finals[0]["nbest"])[0]
    assert best["sentence"] == rec.transcribe(pcm, 16000).text
    assert "".join(p["word"] for p in best["word_pieces"]) == best["sentence"]
    assert all(isinstance(p["start"], int) and p["start"] <= p["end"] for p in best["word_pieces"])
    for m in msgs:
        if m["type"] == "partial_result":
            assert "word_pieces" not in json.loads(m["nbest"])[0]


@pytest.mark.parametrize("first", [b"\x00\x00", "{bad json", '{"signal": "dance"}', '{"signal": "start", "sample_rate": 1}'])
async def test_wenet_errors_are_failed_messages(rec, first):
    async with running(rec) as app:
        async with connect(ws_url(app, "/wenet")) as ws:
            await ws.send(first)
            msg = json.loads(await ws.recv())
            with pytest.raises(ConnectionClosed):
                await ws.recv()
        assert msg["status"] == "failed" and msg["message"] and ws.close_code == 1008
