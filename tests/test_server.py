"""End to end over real websockets on 127.0.0.1: streaming, channels, encodings,
concurrency, every error path with its message and close code, handshake refusals,
backpressure, graceful shutdown, and the HTTP routes.

Clients send audio in real-time-sized frames (100 ms) as fast as they can. Results are
compared with `Recognizer.transcribe` on the same audio (a random model's text is
deterministic garbage, which is all equality needs).
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from asr import g711
from asr.config import ChunkConfig
from asr.recognizer import Recognizer, cpu_has_native_bf16
from server import batcher
from server.app import App
from server.batcher import Batcher
from server.cli import OPTIONS, build_recognizer, vad_factory
from server.session import ChunkRequest, FinalRequest
from server.settings import ConfigError, Settings
from tingxie.cli import build_parser

# `running`: a server on 127.0.0.1 with long endpoint times (one utterance per test
# stream, so its final equals transcribe()) and one model thread.
from .callhelpers import ONE_UTTERANCE, RAW_TEXT, read_all, running
from .conftest import speech_like


@pytest.fixture(scope="module")
def rec(random_model_dir):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small models and batches: a second thread only adds overhead here
    yield Recognizer.from_dir(random_model_dir, device="cpu")
    torch.set_num_threads(threads)


def url(app, query: str = "") -> str:
    return f"ws://127.0.0.1:{app.port}/v1/stream{query}"


def pcm16(audio: np.ndarray) -> np.ndarray:
    return np.round(np.clip(audio, -1, 1) * 32767).astype(np.int16)


async def collect(ws) -> tuple[list[dict], int | None]:
    return await read_all(ws), ws.close_code


async def stream(app, data: bytes, frame: int = 3200, query: str = "", start: dict | None = None, **kw):
    async with connect(url(app, query), **kw) as ws:
        if start is not None:
            await ws.send(json.dumps(start))
        for i in range(0, len(data), frame):
            await ws.send(data[i : i + frame])
        await ws.send('{"type": "end"}')
        return await collect(ws)


def of(msgs, kind):
    return [m for m in msgs if m["type"] == kind]


# ---------------------------------------------------------------- recognition


async def test_stream_partials_then_final_equal_to_transcribe(rec):
    pcm = pcm16(speech_like(4.0, seed=11))
    async with running(rec) as app:
        msgs, code = await stream(app, pcm.tobytes())
    assert code == 1000
    assert msgs[0]["type"] == "ready" and msgs[0]["model"] == rec.name and msgs[0]["sample_rate"] == 16000
    partials, finals = of(msgs, "partial"), of(msgs, "final")
    assert partials and len(finals) == 1
    assert msgs.index(partials[0]) < msgs.index(finals[0])
    assert all(p["utterance"] == 0 and p["channel"] == 0 for p in partials)
    assert finals[0]["text"] == rec.transcribe(pcm, 16000).text
    assert finals[0]["tokens"] and "".join(t["text"] for t in finals[0]["tokens"]) == finals[0]["text"]
    assert msgs[-1] == {"type": "done", "audio_seconds": 4.0}


async def test_two_channels(rec):
    a, b = pcm16(speech_like(2.5, seed=12)), pcm16(speech_like(2.5, seed=13))
    data = np.stack([a, b], axis=1).tobytes()
    async with running(rec) as app:
        msgs, code = await stream(app, data, frame=6400, query="?channels=2")
    assert code == 1000
    finals = {m["channel"]: m["text"] for m in of(msgs, "final")}
    assert finals == {0: rec.transcribe(a, 16000).text, 1: rec.transcribe(b, 16000).text}


async def test_mulaw_8k_configured_by_start_message(rec):
    codes = g711.mulaw_encode(pcm16(speech_like(3.0, rate=8000, seed=14)))
    async with running(rec) as app:
        msgs, code = await stream(app, codes.tobytes(), frame=800, start={"type": "start", "sample_rate": 8000, "encoding": "mulaw"})
    assert code == 1000
    assert msgs[0]["encoding"] == "mulaw" and msgs[0]["sample_rate"] == 8000
    assert of(msgs, "final")[0]["text"] == rec.transcribe(g711.mulaw_decode(codes), 8000).text


async def test_twenty_concurrent_clients_get_their_own_transcripts(rec):
    audios = [pcm16(speech_like(2.0 + 0.1 * i, seed=100 + i)) for i in range(20)]
    async with running(rec, max_batch=32, max_wait_ms=20) as app:
        results = await asyncio.gather(*(stream(app, a.tobytes()) for a in audios))
        sizes = app.metrics.batch_size.collect()[0].samples
    for a, (msgs, code) in zip(audios, results):
        assert code == 1000
        assert [f["text"] for f in of(msgs, "final")] == [rec.transcribe(a, 16000).text]
    count = next(s.value for s in sizes if s.name.endswith("_count"))
    total = next(s.value for s in sizes if s.name.endswith("_sum"))
    assert total / count > 2  # streams were batched together


# ---------------------------------------------------------------- errors


async def error_and_close(ws) -> tuple[dict | None, int | None]:
    msgs, code = await collect(ws)
    errors = of(msgs, "error")
    return (errors[0] if errors else None), code


@pytest.mark.parametrize(
    "query, frames, code",
    [
        ("", ["{not json"], "bad_json"),
        ("", ['{"type": "hello"}'], "bad_message"),
        ("", ['{"type": "start", "encoding": "opus"}'], "bad_config"),
        ("?encoding=opus", [b"\x00\x00"], "bad_config"),
        ("", ['{"type": "start"}', '{"type": "start"}'], "unexpected_message"),
        ("?encoding=pcm_f32le", [np.array([np.nan], "<f4").tobytes()], "bad_audio"),
    ],
)
async def test_protocol_errors_close_with_1008(rec, query, frames, code):
    async with running(rec) as app:
        async with connect(url(app, query)) as ws:
            for f in frames:
                await ws.send(f)
            err, close = await error_and_close(ws)
    assert err["code"] == code and err["message"]
    assert close == 1008


async def test_oversized_frames_close_with_1009(rec):
    async with running(rec, max_frame_bytes=4000) as app:
        async with connect(url(app)) as ws:
            await ws.send(b"\x00" * 4000)  # at the limit: fine
            await ws.send(b"\x00" * 5000)
            err, close = await error_and_close(ws)
        assert err["code"] == "frame_too_large" and close == 1009
        async with connect(url(app)) as ws:
            await ws.send(b"\x00" * 9000)  # beyond twice the limit: cut off by websockets itself
            _, close = await error_and_close(ws)
        assert close == 1009


async def test_api_keys_are_checked_at_the_handshake(rec):
    pcm = pcm16(speech_like(1.0, seed=15)).tobytes()
    async with running(rec, api_key=("k1", "k2")) as app:
        for kw in ({}, {"additional_headers": {"Authorization": "Bearer nope"}}):
            with pytest.raises(InvalidStatus) as e:
                async with connect(url(app), **kw):
                    pass
            assert e.value.response.status_code == 401
        msgs, code = await stream(app, pcm, additional_headers={"Authorization": "Bearer k2"})
        assert code == 1000 and msgs[-1]["type"] == "done"
        msgs, code = await stream(app, pcm, query="?api_key=k1")
        assert code == 1000
        # Health and metrics stay open for probes.
        assert json.loads(await http_get(app, "/healthz"))["status"] == "ok"


async def test_session_limit_answers_503(rec):
    async with running(rec, max_sessions=2) as app:
        a = await connect(url(app))
        b = await connect(url(app))
        with pytest.raises(InvalidStatus) as e:
            async with connect(url(app)):
                pass
        assert e.value.response.status_code == 503
        await a.close()
        await asyncio.sleep(0.1)
        async with connect(url(app)) as c:  # the slot was released
            await c.send('{"type": "end"}')
            assert (await collect(c))[1] == 1000
        await b.close()


class SlowRecognizer:
    """The real recognizer with a slow (or failing) model step."""

    def __init__(self, rec, delay: float, fail_rate: int | None = None):
        self._rec, self.delay, self.fail_rate = rec, delay, fail_rate

    def __getattr__(self, name):
        return getattr(self._rec, name)

    def step(self, streams):
        time.sleep(self.delay)
        if self.fail_rate is not None and any(s.sample_rate == self.fail_rate for s in streams):
            raise RuntimeError("model exploded at /secret/path")
        self._rec.step(streams)


async def test_overload_closes_with_1013(rec):
    data = pcm16(speech_like(1.5, seed=16)).tobytes()
    async with running(SlowRecognizer(rec, 0.3), max_batch=1, overload_s=0.2) as app:
        results = await asyncio.gather(*(stream(app, data) for _ in range(3)))
    overloaded = [(msgs, code) for msgs, code in results if code == 1013]
    assert overloaded
    for msgs, _ in overloaded:
        assert of(msgs, "error")[0]["code"] == "overloaded"


async def test_internal_error_is_opaque_and_isolated(rec):
    good = pcm16(speech_like(2.0, seed=17))
    bad = pcm16(speech_like(2.0, rate=22050, seed=17))
    async with running(SlowRecognizer(rec, 0.0, fail_rate=22050), max_batch=1) as app:
        (bad_msgs, bad_code), (good_msgs, good_code) = await asyncio.gather(
            stream(app, bad.tobytes(), query="?sample_rate=22050"), stream(app, good.tobytes())
        )
        health = json.loads(await http_get(app, "/healthz"))
    assert bad_code == 1011
    assert of(bad_msgs, "error")[0] == {"type": "error", "code": "internal_error", "message": "recognition failed"}
    assert good_code == 1000 and of(good_msgs, "final")[0]["text"] == rec.transcribe(good, 16000).text
    assert health["status"] == "ok"


async def test_idle_client_is_closed(rec):
    async with running(rec, idle_timeout_s=0.3) as app:
        async with connect(url(app)) as ws:
            err, close = await error_and_close(ws)
    assert err["code"] == "idle_timeout" and close == 1008


# ---------------------------------------------------------------- flow control and shutdown


async def test_backpressure_never_drops_audio(rec):
    pcm = pcm16(speech_like(8.0, seed=18))
    async with running(SlowRecognizer(rec, 0.02), max_buffer_s=1.0) as app:
        msgs, code = await stream(app, pcm.tobytes(), frame=16000)
    assert code == 1000
    assert msgs[-1] == {"type": "done", "audio_seconds": 8.0}
    assert of(msgs, "final")[0]["text"] == rec.transcribe(pcm, 16000).text


async def test_end_flushes_every_final_before_done(rec):
    # Short endpoints: several utterances; all finals arrive before done, none after.
    audio = np.concatenate([speech_like(1.0, seed=19), np.zeros(16000), speech_like(1.0, seed=20)])
    async with running(rec, endpoint_silence_ms=200, blank_threshold=0.3, max_utterance_ms=800) as app:
        msgs, code = await stream(app, pcm16(audio).tobytes())
    finals = of(msgs, "final")
    assert code == 1000 and len(finals) >= 2
    assert [f["utterance"] for f in finals] == list(range(len(finals)))
    assert msgs[-1]["type"] == "done" and all(m["type"] != "final" for m in msgs[msgs.index(finals[-1]) + 1 : -1])
    starts = [f["start"] for f in finals]
    assert starts == sorted(starts) and finals[-1]["end"] <= 3.0 + 1e-6


async def test_run_freezes_what_startup_loaded_and_stops_on_sigterm(rec):
    """`App.run` (what `tingxie serve` runs) freezes the objects loaded by startup out of the
    cyclic collector (a full collection over the model and LM stalled the loop and the
    model's thread), serves, and shuts down gracefully on SIGTERM."""
    app = App(Settings(model=".", host="127.0.0.1", port=0, threads=1, final_pass="stream", **ONE_UTTERANCE, **RAW_TEXT), rec)
    gc.unfreeze()
    task = asyncio.create_task(app.run())
    try:
        for _ in range(400):
            if gc.get_freeze_count() or task.done():
                break
            await asyncio.sleep(0.05)
        assert gc.get_freeze_count() > 0 and app.port
        msgs, code = await stream(app, pcm16(speech_like(1.0, seed=60)).tobytes())
        assert code == 1000 and of(msgs, "done")
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(task, 30)
    finally:
        gc.unfreeze()
        if not task.done():
            task.cancel()


async def test_graceful_shutdown_flushes_finals_and_closes_1001(rec):
    pcm = pcm16(speech_like(2.0, seed=21))
    app = App(Settings(model=".", host="127.0.0.1", port=0, threads=1, final_pass="full", **ONE_UTTERANCE, **RAW_TEXT), rec)
    await app.start()
    ws = await connect(url(app))
    for i in range(0, pcm.size * 2, 3200):
        await ws.send(pcm.tobytes()[i : i + 3200])
    first = json.loads(await ws.recv())
    assert first["type"] == "ready"
    await app.shutdown()
    msgs, code = await collect(ws)
    assert code == 1001
    assert of(msgs, "final")[0]["text"] == rec.transcribe(pcm, 16000).text
    assert msgs[-1] == {"type": "done", "audio_seconds": 2.0}
    with pytest.raises(OSError):
        await connect(url(app), open_timeout=2)


# ---------------------------------------------------------------- HTTP routes


async def http_get(app, path: str, headers: dict | None = None) -> bytes:
    def get():
        req = urllib.request.Request(f"http://127.0.0.1:{app.port}{path}", headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, r.headers.get("Content-Type"), r.read()
        except urllib.error.HTTPError as e:
            e.close()  # an open error response would hold the connection until shutdown
            raise

    status, ctype, body = await asyncio.to_thread(get)
    assert status == 200
    return body


async def test_health_metrics_and_page(rec):
    pcm = pcm16(speech_like(1.0, seed=22)).tobytes()
    async with running(rec) as app:
        health = json.loads(await http_get(app, "/healthz"))
        assert health == {"status": "ok", "model": rec.name, "sessions": 0, "max_sessions": 64, "http_port": app.port}
        async with connect(url(app)) as ws:
            await asyncio.sleep(0.05)
            assert json.loads(await http_get(app, "/healthz"))["sessions"] == 1
            await ws.send(pcm)
            await ws.send('{"type": "end"}')
            await collect(ws)
        async with connect(url(app)) as ws:
            await ws.send("{bad")
            await collect(ws)
        metrics = (await http_get(app, "/metrics")).decode()
        for line in ("tingxie_sessions_total 2.0", "tingxie_audio_seconds_total 1.0", 'tingxie_errors_total{code="bad_json"} 1.0',
                     "tingxie_sessions_active 0.0", "tingxie_step_seconds_count", "tingxie_real_time_factor",
                     'tingxie_messages_sent_total{type="final"} 1.0'):
            assert line in metrics, line
        page = (await http_get(app, "/")).decode()
        assert "<html" in page.lower() and "/v1/stream" in (page + (await http_get(app, "/static/app.js")).decode())
        with pytest.raises(urllib.error.HTTPError) as e:
            await http_get(app, "/nope")
        assert e.value.code == 404
        with pytest.raises(urllib.error.HTTPError) as e:
            await http_get(app, "/static/../app.py")
        assert e.value.code == 404


def test_serve_flags_and_environment(tmp_path, random_model_dir):
    args = build_parser().parse_args(["serve", "--port", "9000", "--api-key", "a", "--api-key", "b", "--max-batch", "4"])
    flags = {o.name: getattr(args, o.name) for o in OPTIONS}
    env = {"TINGXIE_PORT": "1234", "TINGXIE_HOST": "127.0.0.1", "TINGXIE_MODEL": str(random_model_dir),
           "TINGXIE_MAX_WAIT_MS": "5", "TINGXIE_RESCORING": "no", "TINGXIE_API_KEY": "x,y"}
    s = Settings.from_sources(flags, env)
    assert (s.port, s.host, s.model, s.max_batch, s.max_wait_ms, s.api_key) == (9000, "127.0.0.1", random_model_dir, 4, 5.0, ("a", "b"))
    s = Settings.from_sources({}, env)
    assert s.api_key == ("x", "y") and s.port == 1234 and s.endpoint.trailing_silence_ms == 800
    with pytest.raises(ConfigError):
        Settings.from_sources({}, {"TINGXIE_PORT": "eighty"})
    with pytest.raises(ConfigError):
        Settings.from_sources({"max_batch": 0}, {})
    with pytest.raises(ConfigError):
        Settings.from_sources({"final_pass": "later"}, {})
    with pytest.raises(ConfigError):
        Settings.from_sources({"final_pass_max_wait_ms": -1}, {})
    assert Settings().final_pass == "auto"
    assert "api_key" in s.public() and "x" not in str(s.public()["api_key"])


async def test_final_passes_do_not_stall_the_streams():
    """A burst of utterance ends is spread over batches (each gets the longer of one step's
    time and half a chunk period: here 50 ms, one 60 ms pass), and chunk requests queued
    behind it still run in the first batch."""
    class Rec:
        def step(self, streams):
            time.sleep(0.01)

        def transcribe(self, audio, sample_rate=16000):
            time.sleep(0.06)
            return "full"

    class St:
        def ready(self):
            return True

        def end_utterance(self):
            return "stream"

    stats = []
    engine = Batcher(Rec(), max_batch=8, max_wait_ms=1, chunk_seconds=0.1, on_batch=stats.append)
    await engine.start()
    try:
        finals = [engine.submit(FinalRequest(0, St(), np.zeros(160, np.float32), 16000, 0.0, True)) for _ in range(4)]
        chunk = engine.submit(ChunkRequest(0, St(), None))
        assert await asyncio.gather(*finals, chunk) == ["full"] * 4 + [True]
    finally:
        await engine.close()
    assert stats[0].chunks == 1 and stats[0].finals == 1
    assert [s.finals for s in stats] == [1, 1, 1, 1]


async def test_streaming_finals_resolve_on_submission():
    """A final that is the streaming result (no full pass asked for, or final pass auto with
    no spare capacity) needs no model work: it resolves on submission, not after the batch
    in progress. A rescoring stream's final still runs on the model's thread."""
    release = threading.Event()

    class Rec:
        def step(self, streams):
            release.wait(10)

        def transcribe(self, audio, sample_rate=16000):
            return "full"

    class St:
        rescoring = False

        def ready(self):
            return True

        def end_utterance(self):
            return ("stream", threading.current_thread().name)

    class Rescoring(St):
        rescoring = True

    skipped = []
    engine = Batcher(Rec(), max_batch=8, max_wait_ms=1, final_pass_max_wait_ms=60_000)
    engine.on_pass_skipped = skipped.append
    await engine.start()
    try:
        chunk = engine.submit(ChunkRequest(0, St(), None))
        await asyncio.sleep(0.05)  # the worker is now inside that step, until released
        here = threading.current_thread().name
        plain = engine.submit(FinalRequest(0, St(), None, 16000, 0.0, True))
        assert plain.done() and plain.result() == ("stream", here)
        engine.step_fraction = lambda now: 1.0  # auto, no spare capacity for a full pass
        auto = engine.submit(FinalRequest(0, St(), np.zeros(160, np.float32), 16000, 0.0, True))
        assert auto.done() and auto.result() == ("stream", here)
        assert engine.passes_skipped == 1 and skipped == [1]
        rescored = engine.submit(FinalRequest(0, Rescoring(), None, 16000, 0.0, True))
        assert not rescored.done()
        release.set()
        assert await chunk is True
        text, thread = await rescored
        assert text == "stream" and thread.startswith("tingxie-engine")
    finally:
        release.set()
        await engine.close()


async def test_final_passes_run_batched_and_equal_transcribe(random_model_dir, monkeypatch):
    """Once the engine has measured a final pass, the passes of an utterance burst run
    together (Recognizer.transcribe_many), each giving what transcribe gives."""
    monkeypatch.setattr(batcher, "MIN_FINAL_BUDGET_S", 30.0)  # time per batch: not what is tested
    rec = Recognizer.from_dir(random_model_dir, device="cpu")
    audios = [speech_like(0.6 + 0.1 * i, seed=40 + i) for i in range(10)]
    stats = []
    engine = Batcher(rec, max_batch=16, max_wait_ms=1, on_batch=stats.append)
    await engine.start()
    try:
        futures = [engine.submit(FinalRequest(0, rec.stream(), a, 16000, 0.0, True)) for a in audios]
        results = await asyncio.gather(*futures)
    finally:
        await engine.close()
    assert [r.text for r in results] == [rec.transcribe(a, 16000).text for a in audios]
    assert stats[0].finals == 1  # the first pass runs alone: its cost is not known yet
    assert [s.finals for s in stats] == [1, len(audios) - 1]


async def test_auto_final_pass_gives_way_to_the_streaming_result_only_under_overload(random_model_dir):
    """final_pass auto: a final pass is replaced by the stream's own result only when the
    streaming steps leave no spare capacity, or when it waited past final_pass_max_wait_ms
    while the worker was saturated. On an idle engine it runs however long it waited."""
    rec = Recognizer.from_dir(random_model_dir, device="cpu")
    audio = speech_like(1.5, seed=50)

    def streamed():
        st = rec.stream()
        st.accept(audio)
        return st

    want_stream = streamed().end_utterance()
    want_full = rec.transcribe(audio, 16000)
    assert want_stream.text != want_full.text  # else the test could not tell them apart
    # (max wait ms, step share, total busy share, expected result, passes skipped)
    cases = (
        (0.0, 0.0, 0.0, want_full, 0),  # late on an idle engine: the pass still runs
        (0.0, 0.3, 0.6, want_full, 0),  # late, spare capacity left
        (60_000.0, 1.0, 1.0, want_stream, 1),  # the streaming steps fill the worker
        (0.0, 0.5, 1.0, want_stream, 1),  # late and the worker saturated: passes pile up
    )
    for max_wait_ms, steps, busy, want, skipped in cases:
        engine = Batcher(rec, max_wait_ms=1, final_pass_max_wait_ms=max_wait_ms)
        await engine.start()
        try:
            # (load itself would make the test timing-dependent)
            engine.step_fraction = lambda now, v=steps: v
            engine.busy_fraction = lambda now, window=None, v=busy: v
            req = FinalRequest(0, streamed(), audio, 16000, 0.0, True)
            got = await engine.submit(req)
        finally:
            await engine.close()
        assert got.text == want.text and engine.passes_skipped == skipped
        assert req.produced_by == ("stream" if skipped else "full")


async def test_a_burst_of_load_skips_no_pass_a_sustained_one_does(random_model_dir, caplog):
    """The skip rules read the worker's load over SKIP_WINDOW_S (10 s): a few seconds of
    saturation, the burst of utterance ends that idle engines see, keep the full pass; the
    same saturation over the whole window gives way, and the log says why."""
    rec = Recognizer.from_dir(random_model_dir, device="cpu")
    audio = speech_like(1.0, seed=51)
    window = batcher.SKIP_WINDOW_S
    # (batches as (seconds before now it ended, worker seconds, of which streaming steps), pass)
    cases = (
        ([(0.1, 0.3 * window, 0.3 * window)], "full"),  # 3 s of nothing but steps
        ([(0.1, 0.95 * window, 0.3 * window)], "full"),  # busy all along, not for long, no waiting pass
        ([(0.5 * window, 0.45 * window, 0.4 * window), (0.1, 0.45 * window, 0.4 * window)], "stream"),
    )
    for batches, want in cases:
        engine = Batcher(rec, max_wait_ms=1, final_pass_max_wait_ms=60_000)
        await engine.start()
        try:
            now = asyncio.get_running_loop().time()
            engine._busy.extend((now - ago, busy, steps) for ago, busy, steps in batches)
            req = FinalRequest(0, rec.stream(), audio, 16000, 0.0, True)
            with caplog.at_level("WARNING", logger="tingxie.engine"):
                await engine.submit(req)
        finally:
            await engine.close()
        assert req.produced_by == want, batches
        assert engine.passes_skipped == (want == "stream")
    assert [r.getMessage() for r in caplog.records if "overloaded" in r.getMessage()] == [
        f"engine overloaded: 1 final pass(es) replaced by the streaming result; over the last {window:.0f} s "
        "the streaming steps took 80% of the worker and it was busy 90%"
    ]


def test_build_recognizer_from_settings(random_model_dir):
    rec = build_recognizer(Settings(model=random_model_dir, chunk_ms=320, history_ms=1280, threads=1, vad="energy"))
    assert rec.chunk == ChunkConfig(8, 4) and rec.blank_threshold == 0.8
    auto = build_recognizer(Settings(model=random_model_dir, threads=1))
    size = rec.bundle.chunk.chunk_size  # the model's chunk (4 frames: 160 ms); history bounded to 2560 ms
    assert auto.chunk == ChunkConfig(size, 16)
    assert build_recognizer(Settings(model=random_model_dir, threads=1, history_ms=0)).chunk == rec.bundle.chunk
    assert auto.compute_dtype == (torch.bfloat16 if cpu_has_native_bf16() else torch.float32)
    assert vad_factory(Settings(vad="energy")).__name__ == "EnergyVad" and vad_factory(Settings()) is None
    with pytest.raises(ConfigError):
        build_recognizer(Settings(model=random_model_dir, precision="fp16", device="cpu", threads=1))


async def test_serve_process_stops_gracefully_on_sigterm(random_model_dir, rec):
    """`python -m server` configured by environment: SIGTERM flushes the open session's
    finals (close 1001) and the process exits 0."""
    env = {**os.environ, "TINGXIE_MODEL": str(random_model_dir), "TINGXIE_HOST": "127.0.0.1", "TINGXIE_PORT": "0",
           "TINGXIE_THREADS": "1", "TINGXIE_PRECISION": "fp32", "TINGXIE_ENDPOINT_SILENCE_MS": "60000", "TINGXIE_NO_SPEECH_MS": "60000",
           "TINGXIE_MAX_UTTERANCE_MS": "60000"}
    proc = subprocess.Popen([sys.executable, "-m", "server"], env=env, stderr=subprocess.PIPE, text=True,
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        port = None
        while port is None:
            line = await asyncio.to_thread(proc.stderr.readline)
            assert line, "the server exited before listening"
            if m := re.search(r"listening on 127\.0\.0\.1:(\d+)", line):
                port = int(m.group(1))
        pcm = pcm16(speech_like(1.5, seed=23))
        async with connect(f"ws://127.0.0.1:{port}/v1/stream") as ws:
            await ws.send(pcm.tobytes())
            assert json.loads(await ws.recv())["type"] == "ready"
            proc.send_signal(signal.SIGTERM)
            msgs, code = await collect(ws)
        assert code == 1001
        final = of(msgs, "final")[0]
        assert final["raw_text"] == rec.transcribe(pcm, 16000).text
        assert final["text"][-1] in "。？！"  # punctuation is on by default
        assert msgs[-1] == {"type": "done", "audio_seconds": 1.5}
        assert await asyncio.to_thread(proc.wait, 30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
