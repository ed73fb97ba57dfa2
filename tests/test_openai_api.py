"""The OpenAI-compatible HTTP API driven by the official `openai` client (base URL on
127.0.0.1): every response format, word and segment timestamps, compressed uploads,
and the error paths with OpenAI-shaped JSON errors and 4xx statuses."""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.error
import urllib.request

import numpy as np
import pytest
import websockets

from asr.audio import write_wav
from asr.batch.inputs import expand_inputs
from asr.batch.media import load_media
from asr.batch.pipeline import run_local
from asr.recognizer import Recognizer
from server import shared_port
from server.app import App
from server.settings import Settings

from .batch_media import encode, video
from .conftest import speech_like
from .test_batch import parse_subtitles, talk

openai = pytest.importorskip("openai", reason="the openai client is not installed (pip install openai)")
pytest.importorskip("aiohttp", reason="the HTTP API needs aiohttp (pip install aiohttp)")


@pytest.fixture(scope="module")
def rec(random_model_dir):
    return Recognizer.from_dir(random_model_dir, device="cpu")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("uploads")
    write_wav(d / "short.wav", speech_like(4.0, seed=21), 16000)
    write_wav(d / "long.wav", talk([6.0, 5.0, 23.0], seed=22), 16000)
    encode(d / "voice", speech_like(3.0, seed=23), 16000, "opus_webm")
    video(d / "silent.mp4", None)
    (d / "corrupt.mp3").write_bytes(b"ID3\x03" + b"\x00junk" * 40)
    (d / "empty.wav").write_bytes(b"")
    (d / "big.wav").write_bytes(b"RIFF" + bytes(1_200_000))
    return d


@contextlib.asynccontextmanager
async def serving(rec, **overrides):
    """The server as `make run` starts it (the API on the main port unless overridden),
    and an `openai` client pointed at the API. Raw text unless a test asks: responses are
    compared with the batch pipeline's raw output."""
    kw = dict(model=".", host="127.0.0.1", port=0, shutdown_timeout_s=5.0, punctuation=False, itn=False)
    kw.update(overrides)
    app = App(Settings(**kw), rec)
    await app.start()
    try:
        yield app, openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{app.http_api.port}/v1", api_key="sk-test",
                                      max_retries=0)
    finally:
        await app.shutdown()


def expected(rec, path):
    (o,) = list(run_local(expand_inputs([path]), rec))
    return o.transcript


async def test_response_formats(rec, files):
    async with serving(rec) as (app, client):
        t = expected(rec, files / "short.wav")
        assert t.text == rec.transcribe(load_media(files / "short.wav").samples[0]).text
        r = await client.audio.transcriptions.create(model="whisper-1", file=files / "short.wav")
        assert r.text == t.text
        text = await client.audio.transcriptions.create(model="whisper-1", file=files / "short.wav",
                                                        response_format="text")
        assert text.strip() == t.text
        for fmt in ("srt", "vtt"):
            body = await client.audio.transcriptions.create(model="whisper-1", file=files / "short.wav",
                                                            response_format=fmt)
            cues = parse_subtitles(body, vtt=fmt == "vtt")
            assert "".join(c[2] for c in cues) == t.text and cues[0][0] == pytest.approx(t.segments[0].start, abs=1e-3)
        models = await client.models.list()
        assert [m.id for m in models.data] == [app.model_name]


async def test_verbose_json_words_and_segments(rec, files):
    async with serving(rec) as (_, client):
        t = expected(rec, files / "long.wav")
        r = await client.audio.transcriptions.create(model="whisper-1", file=files / "long.wav",
                                                     response_format="verbose_json",
                                                     timestamp_granularities=["word", "segment"])
        assert r.language == "chinese" and r.duration == pytest.approx(t.duration, abs=1e-3)
        assert r.text == t.text
        assert [(s.start, s.end, s.text) for s in r.segments] == [
            (round(s.start, 3), round(s.end, 3), s.text) for s in t.segments
        ]
        assert all(s.tokens == [tok.id for tok in seg.tokens] for s, seg in zip(r.segments, t.segments))
        assert "".join(w.word for w in r.words) == t.text  # Han: one word per character
        assert all(a.start <= b.start for a, b in zip(r.words, r.words[1:]))
        assert all(w.start < w.end for w in r.words)
        only_words = await client.audio.transcriptions.create(model="whisper-1", file=files / "long.wav",
                                                              response_format="verbose_json",
                                                              timestamp_granularities=["word"])
        assert only_words.segments is None and len(only_words.words) == len(r.words)


async def test_compressed_upload(rec, files):
    async with serving(rec) as (_, client):
        path = files / "voice.webm"
        r = await client.audio.transcriptions.create(model="whisper-1", file=path, language="zh")
        assert r.text == expected(rec, path).text


async def error_of(call) -> tuple[int, dict]:
    with pytest.raises(openai.APIStatusError) as info:
        await call
    return info.value.status_code, info.value.body


async def test_client_errors(rec, files):
    async with serving(rec, max_upload_mb=1.0) as (_, client):
        create = client.audio.transcriptions.create
        status, body = await error_of(create(model="whisper-1", file=files / "corrupt.mp3"))
        assert status == 400 and body["code"] == "invalid_audio" and "corrupt.mp3: cannot decode" in body["message"]
        assert body["type"] == "invalid_request_error" and body["param"] == "file"
        assert "/tmp" not in body["message"]  # the server's temporary path never leaks
        status, body = await error_of(create(model="whisper-1", file=files / "silent.mp4"))
        assert status == 400 and "no audio stream" in body["message"]
        status, body = await error_of(create(model="whisper-1", file=files / "empty.wav"))
        assert status == 400 and "empty file" in body["message"]
        status, body = await error_of(create(model="whisper-1", file=files / "big.wav"))
        assert status == 413 and body["code"] == "file_too_large"
        status, body = await error_of(create(model="whisper-1", file=files / "short.wav", response_format="xml"))
        assert status == 400 and body["param"] == "response_format"
        status, body = await error_of(create(model="whisper-1", file=files / "short.wav",
                                             timestamp_granularities=["word"]))
        assert status == 400 and body["param"] == "timestamp_granularities"
        status, body = await error_of(create(model="whisper-1", file=files / "short.wav", language="en"))
        assert status == 400 and body["code"] == "unsupported_language"


def _raw(url: str, data: bytes | None = None, headers: dict | None = None, method: str | None = None):
    req = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


async def test_raw_http_errors(rec, files):
    async with serving(rec) as (app, _):
        base = f"http://127.0.0.1:{app.http_api.port}"
        boundary = "XyZ"
        form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n"
                "Content-Type: audio/wav\r\n\r\n").encode() + (files / "short.wav").read_bytes() + f"\r\n--{boundary}--\r\n".encode()
        ctype = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        cases = [
            (_raw, (f"{base}/v1/audio/transcriptions", form, ctype), 400, "model"),  # no model field
            (_raw, (f"{base}/v1/audio/transcriptions", b"{}", {"Content-Type": "application/json"}), 400, None),
            (_raw, (f"{base}/v1/audio/transcriptions",), 405, None),  # GET
            (_raw, (f"{base}/v1/audio/translations", b"x", ctype), 404, None),
        ]
        for fn, args, status, param in cases:
            got, body = await asyncio.to_thread(fn, *args)
            err = json.loads(body)["error"]
            assert got == status and set(err) == {"message", "type", "param", "code"}, (args[0], got, err)
            if param:
                assert err["param"] == param and err["code"] == "missing_required_parameter"


async def test_api_key(rec, files):
    async with serving(rec, api_key=("sk-right",)) as (app, client):
        status, body = await error_of(client.audio.transcriptions.create(model="m", file=files / "short.wav"))
        assert status == 401 and body["code"] == "invalid_api_key"
        ok = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{app.http_api.port}/v1", api_key="sk-right", max_retries=0)
        r = await ok.audio.transcriptions.create(model="m", file=files / "short.wav")
        assert isinstance(r.text, str)


async def test_one_port_serves_the_api_the_stream_and_the_routes(rec, files):
    """One port, as `make run` opens it: the openai client, a websocket session, /healthz,
    /metrics and the page, each connection routed by its first request."""
    assert Settings(model=".").http_port == -1 and np.isclose(Settings(model=".").max_upload_mb, 25.0)
    async with serving(rec) as (app, client):
        assert app.http_api.port == app.port
        base = f"http://127.0.0.1:{app.port}"
        samples = load_media(files / "short.wav").samples[0]
        pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()

        async def stream() -> str:
            async with websockets.connect(f"ws://127.0.0.1:{app.port}/v1/stream") as ws:
                await ws.send(json.dumps({"type": "start", "sample_rate": 16000, "encoding": "pcm_s16le"}))
                for i in range(0, len(pcm), 6400):
                    await ws.send(pcm[i : i + 6400])
                await ws.send(json.dumps({"type": "end"}))
                finals = []
                async for message in ws:
                    m = json.loads(message)
                    if m["type"] == "final":
                        finals.append(m["text"])
                    if m["type"] == "done":
                        return "".join(finals)
            raise AssertionError("no done message")

        # Uploads and a websocket session at the same time, on the same port.
        uploads = [client.audio.transcriptions.create(model="whisper-1", file=files / "short.wav") for _ in range(3)]
        streamed, *results = await asyncio.gather(stream(), *uploads)
        assert {r.text for r in results} == {expected(rec, files / "short.wav").text}
        assert isinstance(streamed, str)
        for path, kind in (("/healthz", "application/json"), ("/metrics", "text/plain"), ("/", "text/html")):
            status, body, ctype = await asyncio.to_thread(_get, base + path)
            assert status == 200 and ctype.startswith(kind), (path, status, ctype)
            if path == "/healthz":
                assert json.loads(body)["status"] == "ok"
        assert [m.id for m in (await client.models.list()).data] == [app.model_name]
        # The API's errors and websockets' 404 both answer on the main port.
        status, body = await asyncio.to_thread(_raw, f"{base}/v1/audio/transcriptions")
        assert status == 405 and json.loads(body)["error"]["code"] == "method_not_allowed"
        status, _, _ = await asyncio.to_thread(_get, base + "/nowhere")
        assert status == 404


async def test_api_on_a_port_of_its_own(rec, files):
    async with serving(rec, http_port=0) as (app, client):
        assert app.http_api.port != app.port
        r = await client.audio.transcriptions.create(model="whisper-1", file=files / "short.wav")
        assert r.text == expected(rec, files / "short.wav").text


async def test_a_connection_that_sends_nothing_is_dropped_and_others_go_on(rec, files, monkeypatch):
    monkeypatch.setattr(shared_port, "HEAD_TIMEOUT_S", 0.5)
    async with serving(rec) as (app, client):
        reader, writer = await asyncio.open_connection("127.0.0.1", app.port)
        half, half_w = await asyncio.open_connection("127.0.0.1", app.port)
        half_w.write(b"POST /v1/audio/transcr")  # an unfinished request line
        r = await client.audio.transcriptions.create(model="whisper-1", file=files / "short.wav")
        assert r.text == expected(rec, files / "short.wav").text
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
        assert await asyncio.wait_for(half.read(), 5) == b""
        writer.close()
        half_w.close()


def _get(url: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read(), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers.get("Content-Type", "")


async def test_text_is_punctuated_by_default(rec, files):
    raw = expected(rec, files / "short.wav")
    async with serving(rec, punctuation=True, itn=True) as (app, client):
        with open(files / "short.wav", "rb") as f:
            r = await client.audio.transcriptions.create(model="tingxie", file=f, response_format="verbose_json")
    assert raw.text and r.text[-1] in "。？！" and r.segments[0].text[-1] in "。？！"
    assert app.text.context("的一是，不了人", prompt=True).phrases == 2  # prompt phrases the model can spell
