"""Shared by the call-center and compatibility protocol tests: a server on 127.0.0.1 with
the random fixture model (same settings as tests/test_server.py, so that finals equal
`Recognizer.transcribe`), espeak-ng Mandarin speech at telephone rates, and a
subscriber client for `/v1/calls/{call_id}/events`."""

from __future__ import annotations

import asyncio
import contextlib
import json

import numpy as np
import torch
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from asr.audio import read_audio
from asr.features import resample
from server.app import App
from server.settings import Settings

from .conftest import espeak

ONE_UTTERANCE = dict(endpoint_silence_ms=60_000, no_speech_ms=60_000, max_utterance_ms=60_000)
# Finals as recognised (no punctuation, no ITN): what these tests compare with transcribe();
# display text is tested in tests/test_transcript_text.py.
RAW_TEXT = dict(punctuation=False, itn=False)
TEXTS = ("你好，我想查询一下我的账单。", "好的，请告诉我您的手机号码。", "今天天气很好。")


@contextlib.asynccontextmanager
async def running(rec, **overrides):
    # final_pass "full": finals are compared with transcribe, so no fallback to the streaming result under load.
    kw = dict(model=".", host="127.0.0.1", port=0, threads=1, shutdown_timeout_s=5.0, final_pass="full", **ONE_UTTERANCE,
              **RAW_TEXT)
    kw.update(overrides)
    app = App(Settings(**kw), rec)
    await app.start()
    try:
        yield app
    finally:
        await app.shutdown()


def speech(tmp_path, text: str, rate: int, name: str = "s") -> np.ndarray:
    """espeak-ng Mandarin as int16 samples at `rate`."""
    audio, sr = read_audio(espeak(text, tmp_path / f"{name}-{abs(hash(text))}.wav"))
    x = resample(torch.from_numpy(audio[0]), sr, rate).numpy() if sr != rate else audio[0]
    return np.round(np.clip(x * 0.9, -1, 1) * 32767).astype(np.int16)


def ws_url(app, path: str) -> str:
    return f"ws://127.0.0.1:{app.port}{path}"


async def read_all(ws) -> list[dict]:
    """Every JSON message until the server closes the connection."""
    out = []
    try:
        async for m in ws:
            out.append(json.loads(m))
    except ConnectionClosed:
        pass
    return out


async def subscribe(app, call_id: str) -> tuple[asyncio.Task, asyncio.Event]:
    """Subscribe to a call's events: a task collecting them until the server closes,
    and an event set once the subscription is open."""
    ready = asyncio.Event()

    async def run() -> list[dict]:
        async with connect(ws_url(app, f"/v1/calls/{call_id}/events")) as ws:
            ready.set()
            return await read_all(ws)

    task = asyncio.create_task(run())
    await asyncio.wait_for(ready.wait(), 5)
    await asyncio.sleep(0.05)  # the server registers the subscriber after the handshake
    return task, ready


def finals(events: list[dict], role: str | None = None) -> list[str]:
    return [e["text"] for e in events if e["type"] == "final" and (role is None or e.get("role") == role)]
