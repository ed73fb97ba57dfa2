"""Vosk-compatible endpoint, driven like vosk-server's `websocket/test.py`: config,
0.2 s binary chunks each followed by `recv()`, then `{"eof" : 1}` and the final result."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from asr.recognizer import Recognizer

from .callhelpers import TEXTS, running, speech, ws_url
from .conftest import needs_espeak

pytestmark = needs_espeak


@pytest.fixture(scope="module")
def rec(random_model_dir):
    return Recognizer.from_dir(random_model_dir, device="cpu")


async def vosk_client(uri: str, pcm: bytes, rate: int | None) -> tuple[list[dict], int]:
    replies, sent = [], 0
    async with connect(uri) as ws:
        if rate is not None:
            await ws.send('{ "config" : { "sample_rate" : %d } }' % rate)
        step = int((rate or 8000) * 0.2) * 2
        for i in range(0, len(pcm), step):
            await ws.send(pcm[i : i + step])
            sent += 1
            replies.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
        await ws.send('{"eof" : 1}')
        sent += 1
        replies.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
        with pytest.raises(ConnectionClosed):
            await ws.recv()
    return replies, sent


async def test_one_reply_per_message_and_final_result(rec, tmp_path):
    pcm8 = speech(tmp_path, TEXTS[0], 8000)
    pcm16 = speech(tmp_path, TEXTS[1], 16000)
    async with running(rec, compat=("vosk=0",)) as app:
        r8, n8 = await vosk_client(f"ws://127.0.0.1:{app.integrations.ports['vosk']}", pcm8.tobytes(), None)  # default 8 kHz
        r16, n16 = await vosk_client(ws_url(app, "/vosk"), pcm16.tobytes(), 16000)
    for replies, n, pcm, rate in ((r8, n8, pcm8, 8000), (r16, n16, pcm16, 16000)):
        assert len(replies) == n
        assert all(set(r) == {"partial"} for r in replies[:-1]) and any(r["partial"] for r in replies[:-1])
        last = replies[-1]
        assert last["text"] == rec.transcribe(pcm, rate).text
        assert last["result"] and all(set(w) == {"conf", "end", "start", "word"} for w in last["result"])
        assert all(0 <= w["start"] <= w["end"] <= len(pcm) / rate + 0.05 for w in last["result"])


async def test_endpoint_result_mid_stream(rec, tmp_path):
    pcm = speech(tmp_path, TEXTS[2], 8000)
    audio = np.concatenate([pcm, np.zeros(8000 * 2, np.int16), pcm])
    async with running(rec, endpoint_silence_ms=300, blank_threshold=0.3, max_utterance_ms=3000) as app:
        replies, n = await vosk_client(ws_url(app, "/vosk"), audio.tobytes(), 8000)
    assert len(replies) == n
    assert any("result" in r or "text" in r for r in replies[:-1])  # a result before eof


@pytest.mark.parametrize("bad", ["{nope", '{"config": {"sample_rate": 100}}', '{"hello": 1}'])
async def test_malformed_text_closes_1011(rec, bad):
    async with running(rec) as app:
        async with connect(ws_url(app, "/vosk")) as ws:
            await ws.send(bad)
            with pytest.raises(ConnectionClosed):
                await ws.recv()
        assert ws.close_code == 1011
        async with connect(ws_url(app, "/vosk")) as ws:  # still serving
            await ws.send(b"\x00\x00" * 1600)
            assert "partial" in json.loads(await ws.recv())


async def test_compat_port_checks_the_api_key(rec):
    async with running(rec, compat=("vosk=0",), api_key=("sekret",)) as app:
        port = app.integrations.ports["vosk"]
        with pytest.raises(InvalidStatus) as refused:
            async with connect(f"ws://127.0.0.1:{port}"):
                pass
        assert refused.value.response.status_code == 401
        async with connect(f"ws://127.0.0.1:{port}/?api_key=sekret") as ws:
            await ws.send('{"eof" : 1}')
            assert "text" in json.loads(await asyncio.wait_for(ws.recv(), 10))
