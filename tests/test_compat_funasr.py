"""FunASR-compatible endpoint, driven by a client written from FunASR's websocket
protocol (what `funasr_wss_client.py --ssl 0` sends, including the `is_end` that its
latest version waits to see acknowledged)."""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from asr.recognizer import Recognizer
from server.compat.funasr import FunasrError, parse_config

from .callhelpers import TEXTS, running, speech, ws_url
from .conftest import needs_espeak

pytestmark = needs_espeak


@pytest.fixture(scope="module")
def rec(random_model_dir):
    return Recognizer.from_dir(random_model_dir, device="cpu")


async def funasr_client(uri: str, pcm: bytes, mode: str, fs: int, chunk_size, itn: bool = False,
                        hotwords: dict | None = None) -> list[dict]:
    out = []
    async with connect(uri, subprotocols=["binary"]) as ws:
        await ws.send(json.dumps({"mode": mode, "chunk_size": chunk_size, "chunk_interval": 10,
                                  "encoder_chunk_look_back": 4, "decoder_chunk_look_back": 0,
                                  "audio_fs": fs, "wav_name": "demo", "wav_format": "pcm", "is_speaking": True,
                                  "hotwords": json.dumps(hotwords or {"账单": 20}), "itn": itn}))
        sizes = chunk_size if isinstance(chunk_size, list) else [int(x) for x in chunk_size.split(",")]
        stride = int(60 * sizes[1] / 10 / 1000 * fs * 2)
        for i in range(0, len(pcm), stride):
            await ws.send(pcm[i : i + stride])
        await ws.send(json.dumps({"is_speaking": False, "is_end": True}))
        while True:
            m = json.loads(await asyncio.wait_for(ws.recv(), 15))
            out.append(m)
            if m.get("is_end"):
                break
        with pytest.raises(ConnectionClosed):
            await ws.recv()
    return out


async def test_2pass_offline_finals_and_is_end_ack(rec, tmp_path):
    pcm = speech(tmp_path, TEXTS[0], 16000)
    async with running(rec, compat=("funasr=0",)) as app:
        msgs = await funasr_client(f"ws://127.0.0.1:{app.integrations.ports['funasr']}/", pcm.tobytes(), "2pass", 16000, [5, 10, 5])
    assert msgs[-1] == {"mode": "2pass", "wav_name": "demo", "is_end": True, "is_final": True}
    offline = [m for m in msgs if m.get("mode") == "2pass-offline"]
    assert [m["text"] for m in offline] == [rec.transcribe(pcm, 16000).text]
    stamps = json.loads(offline[0]["timestamp"])
    assert stamps and all(a <= b for a, b in stamps) and offline[0]["end_time"] >= stamps[-1][1]
    online = [m for m in msgs if m.get("mode") == "2pass-online"]
    assert online and all(m["text"] and m["is_final"] is False for m in online)
    assert msgs.index(online[0]) < msgs.index(offline[0])


async def test_online_8k_and_offline_modes(rec, tmp_path):
    pcm8 = speech(tmp_path, TEXTS[1], 8000)
    pcm16 = speech(tmp_path, TEXTS[2], 16000)
    async with running(rec) as app:
        online = await funasr_client(ws_url(app, "/funasr"), pcm8.tobytes(), "online", 8000, "5,10,5")
        offline = await funasr_client(ws_url(app, "/funasr"), pcm16.tobytes(), "offline", 16000, [8, 8, 4])
    assert all(m["mode"] == "online" for m in online[:-1]) and online[-1]["is_final"] is True
    assert "".join(m["text"] for m in online[:-1])  # deltas
    assert [m["text"] for m in offline if not m.get("is_end")] == [rec.transcribe(pcm16, 16000).text]


@pytest.mark.parametrize("first", ["[1]", '{"mode": "3pass"}', '{"mode": "online", "audio_fs": 4000}',
                                   '{"mode": "online", "wav_format": "mp3"}', '{"mode": "online", "chunk_size": "a,b"}'])
async def test_bad_first_message(rec, first):
    async with running(rec) as app:
        async with connect(ws_url(app, "/funasr")) as ws:
            await ws.send(first)
            msg = json.loads(await ws.recv())
            with pytest.raises(ConnectionClosed):
                await ws.recv()
        assert msg["is_final"] is False and msg["error"] and ws.close_code == 1008


def test_parse_config():
    c = parse_config({"mode": "online", "chunk_size": "8,8,4", "hotwords": '{"阿里巴巴": 20}'})
    assert c.chunk_size == (8, 8, 4) and c.hotwords == {"阿里巴巴": 20} and c.audio_fs == 16000
    with pytest.raises(FunasrError):
        parse_config({"chunk_size": [1, 2]})
