"""Regression tests for malformed input, fast senders, draining, bounded memory, the final
pass and the entry points' credentials (docs/reliability.md, docs/deployment.md): a real
server on 127.0.0.1 with the random fixture model, real websocket and TCP clients."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import urllib.error
import urllib.request
import uuid

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from asr import g711
from asr.lm import NgramLM
from asr.memory import can_release_free_heap, release_free_heap
from asr.recognizer import Recognizer
from server import app as app_module
from server.auth import twilio_signature
from server.telephony.audiosocket import HANGUP, audiosocket_frame

from .callhelpers import read_all, running, ws_url
from .conftest import speech_like


@pytest.fixture(scope="module")
def rec(random_model_dir):
    return Recognizer.from_dir(random_model_dir, device="cpu")


def pcm16(seconds: float, seed: int = 0) -> bytes:
    return np.round(np.clip(speech_like(seconds, seed=seed), -1, 1) * 32767).astype("<i2").tobytes()


async def exchange(app, path: str, frames: list, timeout: float = 60, **kw) -> tuple[list[dict], int | None]:
    async with connect(ws_url(app, path), **kw) as ws:
        for f in frames:
            await ws.send(f)
        msgs = await asyncio.wait_for(read_all(ws), timeout)
        return msgs, ws.close_code


def http(app, path: str, headers: dict | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(f"http://127.0.0.1:{app.port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.read()


# ---------------------------------------------------------------- 1. field parsing


@pytest.mark.parametrize("start", [
    {"sample_rate": "²"}, {"sample_rate": "①"}, {"sample_rate": "¹⁶"}, {"sample_rate": "9" * 5000},
    {"channels": "②"}, {"encoding": []}, {"encoding": {}}, {"sample_rate": 1e308}, {"sample_rate": [16000]},
])
async def test_bad_start_fields_answer_bad_config(rec, start):
    async with running(rec) as app:
        msgs, code = await exchange(app, "/v1/stream", [json.dumps({"type": "start", **start})])
    assert msgs[-1]["type"] == "error" and msgs[-1]["code"] == "bad_config" and len(msgs[-1]["message"]) < 200
    assert code == 1008


async def test_bad_query_fields_answer_bad_config(rec):
    async with running(rec) as app:
        for query in ("sample_rate=%C2%B2", "channels=%E2%91%A1", "sample_rate=" + "9" * 5000):
            msgs, code = await exchange(app, f"/v1/stream?{query}", [b"\x00\x00"])
            assert [m["code"] for m in msgs] == ["bad_config"] and code == 1008, query


@pytest.mark.parametrize("first", [
    '{"mode": "2pass", "hotwords": "' + "[" * 5000 + "]" * 5000 + '"}',
    '{"mode": "2pass", "audio_fs": "²"}',
    '{"mode": "2pass", "chunk_size": [Infinity, 1, 1]}',
    '{"mode": "2pass", "chunk_size": [1e400, 1, 1]}',
    '{"mode": ["2pass"]}',
])
async def test_funasr_bad_fields_answer_an_error_and_1008(rec, first):
    async with running(rec) as app:
        msgs, code = await exchange(app, "/funasr", [first, b"\x00" * 320, '{"is_speaking": false, "is_end": true}'])
    if "hotwords" in first:  # hotwords too deep to be JSON are taken as words: the session goes on
        assert msgs[-1]["is_end"] is True and msgs[-1]["is_final"] is True and code == 1000
        return
    assert msgs[-1]["error"] and msgs[-1]["is_final"] is False and code == 1008


@pytest.mark.parametrize("path, metadata", [
    ("/freeswitch?rate=%C2%B2", "{}"), ("/freeswitch", '{"sampleRate": "²"}'), ("/freeswitch", '{"callId": [1]}'),
])
async def test_freeswitch_bad_rates_answer_in_band(rec, path, metadata):
    async with running(rec) as app:
        msgs, code = await exchange(app, path, [metadata])
    assert msgs[-1]["type"] == "error" and msgs[-1]["data"]["code"] == "bad_config" and code == 1008


# ---------------------------------------------------------------- 2, 5. Twilio: one bad message is skipped


async def test_twilio_call_survives_malformed_messages(rec):
    codes = g711.mulaw_encode(np.frombuffer(pcm16(2.0, seed=3), "<i2"))
    sid = "CA" + "1" * 32

    def media(i: int) -> str:
        return json.dumps({"event": "media", "media": {"track": "inbound", "timestamp": str(i * 20),
                                                       "payload": base64.b64encode(codes[i * 160:(i + 1) * 160].tobytes()).decode()}})

    bad = [
        '{"event": "media", "media": {"payload": "ÿÿÿÿ"}}',
        '{"event": "media", "media": {"track": "inbound", "timestamp": "²", "payload": "AAAA"}}',
        '{"event": "start", "start": "x"}', '{"event": "start", "start": 5}', '{"event": "start", "start": [1]}',
        '{"event": "start", "start": {"mediaFormat": "x"}}',
        '{"event": "start", "start": {"mediaFormat": {"sampleRate": "abc"}}}',
        b"\xff\xfe not utf-8",  # sent as a TEXT frame below
        '{"event": "dtmf", "dtmf": {"digit": []}}', "[" * 5000,
    ]
    async with running(rec) as app:
        async with connect(ws_url(app, f"/v1/calls/{sid}/events")) as sub:
            await asyncio.sleep(0.05)
            async with connect(ws_url(app, "/twilio")) as ws:
                await ws.send(json.dumps({"event": "start", "start": {"callSid": sid, "tracks": ["inbound"]}}))
                n = len(codes) // 160
                for i in range(n):
                    await ws.send(media(i))
                    if i < len(bad):
                        await ws.send(bad[i], text=True)
                await ws.send(json.dumps({"event": "dtmf", "dtmf": {"track": "inbound_track", "digit": "5"}}))
                await ws.send(json.dumps({"event": "stop"}))
                assert await asyncio.wait_for(read_all(ws), 30) == [] and ws.close_code == 1000
            events = await asyncio.wait_for(read_all(sub), 30)
    kinds = [e["type"] for e in events]
    assert "dtmf" in kinds and kinds[-1] == "call_end"
    assert events[-1]["reason"] == "stop" and events[-1]["audio_seconds"] == pytest.approx(n * 0.02, abs=0.001)
    assert "error" not in kinds


# ---------------------------------------------------------------- 3. huge float samples


async def test_huge_finite_float_samples_are_clipped(rec):
    loud = np.full(16000, 1e38, "<f4").tobytes()
    async with running(rec) as app:
        msgs, code = await exchange(app, "/v1/stream?encoding=pcm_f32le", [loud, '{"type": "end"}'])
    assert msgs[-1] == {"type": "done", "audio_seconds": 1.0} and code == 1000


# ---------------------------------------------------------------- 4. after end


@pytest.mark.parametrize("after", ['{"type": "end"}', b"\x00\x00", '{"type": "start"}'])
async def test_messages_after_end_are_unexpected(rec, after):
    async with running(rec, threads=1) as app:
        # The engine is kept busy for a moment so that the session is still decoding
        # when the extra message arrives.
        busy = asyncio.ensure_future(app.batcher.run_in_worker(lambda: time.sleep(0.5)))
        msgs, code = await exchange(app, "/v1/stream", [pcm16(2.0, seed=4), '{"type": "end"}', after])
        await busy
    assert msgs[-1]["type"] == "error" and msgs[-1]["code"] == "unexpected_message" and code == 1008


# ---------------------------------------------------------------- 5. invalid UTF-8


async def test_invalid_utf8_text_closes_1007(rec):
    async with running(rec) as app:
        async with connect(ws_url(app, "/v1/stream")) as ws:
            await ws.send(b"\xff\xfe", text=True)
            await asyncio.wait_for(read_all(ws), 10)
            assert ws.close_code == 1007


# ---------------------------------------------------------------- 6. fast senders


async def test_fast_sender_is_slowed_down_never_cut_off(rec, monkeypatch):
    monkeypatch.setattr(app_module, "PING_INTERVAL_S", 0.05)  # many keepalive pings during backpressure
    data = pcm16(24.0, seed=5)
    async with running(rec, max_buffer_s=0.5, endpoint_silence_ms=300, max_utterance_ms=4000) as app:
        frames = [data[i:i + 6400] for i in range(0, len(data), 6400)] + ['{"type": "end"}']
        # The client's own keepalive is off: its pings would wait behind the audio still in
        # its send buffer, however the server behaves (docs/protocol.md, flow control).
        msgs, code = await exchange(app, "/v1/stream", frames, timeout=300, ping_interval=None)
    assert code == 1000 and msgs[-1] == {"type": "done", "audio_seconds": 24.0}, (code, msgs[-2:])
    finals = [m for m in msgs if m["type"] == "final"]
    assert finals and all(m["pass"] == "full" for m in finals)


# ---------------------------------------------------------------- 7. draining


async def test_draining_answers_503_while_live_streams_finish(rec):
    async with running(rec) as app:
        ws = await connect(ws_url(app, "/v1/stream"))
        await ws.send(pcm16(1.5, seed=6))
        assert json.loads(await ws.recv())["type"] == "ready"
        busy = asyncio.ensure_future(app.batcher.run_in_worker(lambda: time.sleep(1.5)))  # the engine is behind
        await asyncio.sleep(0.05)
        stopping = asyncio.ensure_future(app.shutdown())
        await asyncio.sleep(0.1)
        status, body = await asyncio.to_thread(http, app, "/healthz")
        assert status == 503 and json.loads(body)["status"] == "shutting_down"
        with pytest.raises(InvalidStatus) as e:
            async with connect(ws_url(app, "/v1/stream")):
                pass
        assert e.value.response.status_code == 503 and b"shutting down" in e.value.response.body
        msgs = await asyncio.wait_for(read_all(ws), 30)
        await busy
        await stopping
    assert ws.close_code == 1001 and msgs[-1]["type"] == "done" and any(m["type"] == "final" for m in msgs)


# ---------------------------------------------------------------- 8. bounded LM memo


def test_lm_memos_stay_bounded():
    units = [chr(0x4E00 + i) for i in range(40)]
    table = {(u,): (-1.6, -0.2) for u in units}
    table.update({(a, b): (-0.8, -0.1) for a in units[:20] for b in units[:20]})
    lm = NgramLM.from_table(table, units)
    lm.MEMO_LIMIT = 500
    rng = np.random.default_rng(0)
    for _ in range(5000):
        state = lm.start
        for u in rng.integers(0, len(units), 6):
            _, state = lm.score(state, int(u))
            lm.max_score(state)
    assert max(len(lm._cache), len(lm._states), len(lm._bows), len(lm._bounds)) <= lm.MEMO_LIMIT + 1


def _rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not can_release_free_heap(), reason="needs glibc's malloc_trim")
def test_free_heap_pages_go_back_to_the_os():
    # 2,000 blocks of 48 KB (below malloc's mmap threshold: they live in the heap), every
    # eighth kept: the freed seven eighths are holes that free() alone never returns.
    blocks = [np.ones(6144) for _ in range(2000)]
    kept = blocks[::8]
    del blocks
    before = _rss_mb()
    assert release_free_heap()
    assert before - _rss_mb() > 40, "malloc_trim gave back less than half the 84 MB freed"
    assert all(b[0] == 1.0 for b in kept)


async def test_engine_trims_the_heap_once_idle(rec):
    async with running(rec) as app:
        app.batcher.trim_interval = 0.3
        assert app.batcher.heap_trims == 0  # nothing ran yet: nothing to trim
        msgs, _ = await exchange(app, "/v1/stream", [pcm16(1.0, seed=3), '{"type": "end"}'])
        deadline = time.monotonic() + 10
        while app.batcher.heap_trims == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        trims = app.batcher.heap_trims
        await asyncio.sleep(1.0)  # idle since: no further trims
        assert app.batcher.heap_trims == trims
    assert trims == 1 and any(m["type"] == "final" for m in msgs)


# ---------------------------------------------------------------- 9. which pass made a final


async def test_idle_engine_finals_are_full_passes_and_counted(rec):
    async with running(rec, final_pass="auto", final_pass_max_wait_ms=0.0) as app:
        # Every pass "waits" past the limit here, but an idle engine still runs it.
        msgs, code = await exchange(app, "/v1/stream", [pcm16(2.0, seed=7), '{"type": "end"}'])
        metrics = (await asyncio.to_thread(http, app, "/metrics"))[1].decode()
    finals = [m for m in msgs if m["type"] == "final"]
    assert finals and all(m["pass"] == "full" for m in finals) and code == 1000
    assert f'tingxie_finals_total{{pass="full"}} {len(finals)}.0' in metrics
    assert "tingxie_final_passes_skipped_total 0.0" in metrics


async def test_stream_final_pass_is_labelled(rec):
    async with running(rec, final_pass="stream") as app:
        msgs, _ = await exchange(app, "/v1/stream", [pcm16(2.0, seed=7), '{"type": "end"}'])
    finals = [m for m in msgs if m["type"] == "final"]
    assert finals and all(m["pass"] == "stream" for m in finals)


# ---------------------------------------------------------------- security: AudioSocket


async def closed_by_server(r: asyncio.StreamReader) -> bool:
    """The server closed (or reset) the connection without sending anything."""
    try:
        return await asyncio.wait_for(r.read(), 5) == b""
    except ConnectionResetError:
        return True


async def audiosocket_call(port: int, call_id: uuid.UUID, seconds: float = 0.0, hold: bool = False):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(audiosocket_frame(0x01, call_id.bytes))
    data = pcm16(seconds, seed=8) if seconds else b""
    for i in range(0, len(data), 320):
        w.write(audiosocket_frame(0x10, data[i:i + 320]))
    await w.drain()
    return r, w


async def test_audiosocket_is_loopback_limited_counted_and_ids_unique(rec):
    cid = uuid.uuid4()
    async with running(rec, audiosocket_port=0, max_sessions=1) as app:
        assert app.settings.audiosocket_host == "127.0.0.1"
        port = app.integrations.ports["audiosocket"]
        r, w = await audiosocket_call(port, cid, 0.2)
        await asyncio.sleep(0.2)
        assert app.active_sessions == 1
        with pytest.raises(InvalidStatus) as e:  # the AudioSocket call holds the only slot
            async with connect(ws_url(app, "/v1/stream")):
                pass
        assert e.value.response.status_code == 503
        r2, w2 = await asyncio.open_connection("127.0.0.1", port)  # over the limit: closed at once
        assert await closed_by_server(r2)
        w2.close()
        w.write(HANGUP)
        await w.drain()
        await asyncio.wait_for(r.read(), 10)
        w.close()
    async with running(rec, audiosocket_port=0, max_sessions=4) as app:
        port = app.integrations.ports["audiosocket"]
        r, w = await audiosocket_call(port, cid, 0.2)
        await asyncio.sleep(0.1)
        r2, w2 = await audiosocket_call(port, cid)  # the same call id again: hung up
        assert await asyncio.wait_for(r2.read(), 5) == HANGUP
        w2.close()
        w.write(HANGUP)
        await w.drain()
        await asyncio.wait_for(r.read(), 10)
        w.close()


async def test_audiosocket_allowlist_refuses_other_peers(rec):
    async with running(rec, audiosocket_port=0, audiosocket_allow=("10.0.0.0/8",)) as app:
        r, w = await asyncio.open_connection("127.0.0.1", app.integrations.ports["audiosocket"])
        w.write(audiosocket_frame(0x01, uuid.uuid4().bytes))
        assert await closed_by_server(r)
        w.close()
        assert app.active_sessions == 0


# ---------------------------------------------------------------- security: /twilio


async def test_keyless_twilio_sockets_hold_no_slot(rec):
    async with running(rec, api_key=("k",), max_sessions=1, idle_timeout_s=0.5) as app:
        strangers = [await connect(ws_url(app, "/twilio")) for _ in range(3)]
        await asyncio.sleep(0.1)
        assert app.active_sessions == 0
        msgs, code = await exchange(app, "/v1/stream?api_key=k", [pcm16(0.5), '{"type": "end"}'])
        assert code == 1000
        # A wrong key is closed at once; the silent ones at the idle timeout.
        bad = await connect(ws_url(app, "/twilio"))
        await bad.send(json.dumps({"event": "start", "start": {"customParameters": {"api_key": "no"}}}))
        await asyncio.wait_for(read_all(bad), 5)
        assert bad.close_code == 1008
        for ws in strangers:
            await asyncio.wait_for(read_all(ws), 5)
            assert ws.close_code == 1008


async def test_twilio_signature_is_verified_at_the_handshake(rec):
    token = "twilio-auth-token"
    async with running(rec, twilio_auth_token=token) as app:
        host = f"127.0.0.1:{app.port}"
        for headers in ({}, {"X-Twilio-Signature": "bad"}):
            with pytest.raises(InvalidStatus) as e:
                async with connect(ws_url(app, "/twilio"), additional_headers=headers):
                    pass
            assert e.value.response.status_code == 401
        good = twilio_signature(token, f"wss://{host}/twilio?x=1")
        async with connect(ws_url(app, "/twilio?x=1"), additional_headers={"X-Twilio-Signature": good}) as ws:
            await asyncio.sleep(0.05)
            assert app.active_sessions == 1
            await ws.send(json.dumps({"event": "stop"}))
            await asyncio.wait_for(read_all(ws), 5)
        assert ws.close_code == 1000


# ---------------------------------------------------------------- idle timeouts, /metrics


@pytest.mark.parametrize("path, first", [
    ("/wenet", '{"signal": "start"}'), ("/funasr", '{"mode": "online"}'), ("/vosk", '{"config": {"sample_rate": 16000}}'),
    ("/freeswitch", '{"sampleRate": 8000}'),
])
async def test_compat_and_freeswitch_idle_timeout(rec, path, first):
    async with running(rec, idle_timeout_s=0.3) as app:
        t0 = time.monotonic()
        msgs, code = await exchange(app, path, [first])
    assert code == 1008 and time.monotonic() - t0 < 5


async def test_metrics_need_the_key_unless_open(rec):
    async with running(rec, api_key=("k",)) as app:
        assert (await asyncio.to_thread(http, app, "/metrics"))[0] == 401
        assert (await asyncio.to_thread(http, app, "/metrics", {"Authorization": "Bearer k"}))[0] == 200
        assert (await asyncio.to_thread(http, app, "/healthz"))[0] == 200
    async with running(rec, api_key=("k",), metrics_auth="none") as app:
        assert (await asyncio.to_thread(http, app, "/metrics"))[0] == 200


# ---------------------------------------------------------------- 10. HTTP API


def _post(port: int, body: bytes, headers: dict) -> tuple[int, dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/audio/transcriptions", data=body, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        with e:
            return e.code, json.loads(e.read())


def _form(filename: str, data: bytes, boundary: str = "B0uNd") -> tuple[bytes, dict]:
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            "Content-Type: audio/wav\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


async def test_http_api_bad_requests_get_4xx_without_internals(rec):
    pytest.importorskip("aiohttp")
    async with running(rec, http_port=0, api_key=("k",)) as app:
        port = app.http_api.port
        body, headers = _form("a.wav", b"RIFF\x24\x00\x00\x00WAVEfmt ")
        status, err = await asyncio.to_thread(_post, port, body, {**headers, "Authorization": "Bearer \xff\xfe"})
        assert status == 401 and err["error"]["code"] == "invalid_api_key"
        auth = {**headers, "Authorization": "Bearer k"}
        for name in ("a\x00b.wav", "x.wav\"; filename*=utf-8''a%00b.wav"):  # raw, and RFC 5987-encoded
            status, err = await asyncio.to_thread(_post, port, _form(name, b"RIFF")[0], auth)
            assert status == 400 and err["error"]["code"] in ("invalid_multipart", "invalid_value", "invalid_audio"), name
        status, err = await asyncio.to_thread(_post, port, body, auth)  # a truncated WAV
        assert status == 400 and err["error"]["code"] == "invalid_audio"
        assert "tingxie-upload" not in err["error"]["message"] and "/tmp" not in err["error"]["message"]

        # A chunked body of endless non-file fields is refused once the fields pass their bound.
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\n"
                b"Content-Type: multipart/form-data; boundary=B\r\nTransfer-Encoding: chunked\r\n\r\n")
        part = b'--B\r\nContent-Disposition: form-data; name="f"\r\n\r\n' + b"x" * 8000 + b"\r\n"
        sent = 0
        reply = asyncio.ensure_future(r.readline())
        try:
            while not reply.done() and sent < 48_000_000:
                w.write(b"%x\r\n%s\r\n" % (len(part), part))
                await w.drain()
                sent += len(part)
                await asyncio.sleep(0)
        except ConnectionError:
            pass
        status_line = await asyncio.wait_for(reply, 10)
        w.close()
    assert b" 413 " in status_line and sent < 5_000_000
