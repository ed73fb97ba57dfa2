"""Call event subscribers and the webhook: replay for late subscribers, aliases, slow
subscribers dropped, webhook retries with backoff, and a webhook that never answers
does not hold up a call's audio."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from aiohttp import web
from websockets.asyncio.client import connect

from asr.recognizer import Recognizer
from server.telephony.audiosocket import audiosocket_frame
from server.telephony.subscribers import Hub, call_id_from_path
from server.telephony.webhooks import Webhook

from .callhelpers import TEXTS, finals, running, speech, ws_url
from .conftest import needs_espeak


@pytest.fixture(scope="module")
def rec(random_model_dir):
    return Recognizer.from_dir(random_model_dir, device="cpu")


async def test_hub_replays_and_drops_slow_subscribers():
    hub = Hub()
    hub.publish("c1", {"type": "call_start"})
    q, ended = hub.subscribe("c1")
    assert not ended and q.get_nowait() == {"call_id": "c1", "type": "call_start"}
    for i in range(q.maxsize + 5):  # never read: dropped, with a marker
        hub.publish("c1", {"type": "partial", "i": i})
    assert [q.get_nowait()["type"] for _ in range(q.qsize())] == ["dropped"]
    hub.publish("c1", {"type": "call_end"})
    q2, ended = hub.subscribe("c1")
    assert ended and q2.qsize() > 0
    assert call_id_from_path("/v1/calls/CA12/events") == "CA12" and call_id_from_path("/v1/calls//events") is None


class Receiver:
    """A webhook target failing the first `failures` posts with HTTP 500."""

    def __init__(self, failures: int) -> None:
        self.failures, self.posts, self.ok = failures, 0, []

    async def handle(self, request):
        self.posts += 1
        if self.posts <= self.failures:
            return web.Response(status=500)
        self.ok.append(await request.json())
        return web.Response(status=204)


async def serve_receiver(receiver: Receiver):
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return runner, f"http://127.0.0.1:{port}/hook"


async def test_webhook_retries_with_backoff():
    receiver = Receiver(failures=2)
    runner, url = await serve_receiver(receiver)
    hook = Webhook(url, attempts=4, backoff_s=0.01)
    await hook.start()
    try:
        hook({"type": "partial", "text": "skipped"})  # only finals, DTMF and call ends are posted
        hook({"type": "final", "text": "好", "call_id": "c"})
        await hook.close(drain_s=5)
    finally:
        await runner.cleanup()
    assert receiver.posts == 3 and receiver.ok == [{"type": "final", "text": "好", "call_id": "c"}]
    assert hook.delivered == 1 and hook.failed == 0


async def test_webhook_gives_up_after_bounded_tries():
    receiver = Receiver(failures=100)
    runner, url = await serve_receiver(receiver)
    hook = Webhook(url, attempts=3, backoff_s=0.01)
    await hook.start()
    try:
        hook({"type": "final", "text": "x"})
        await hook.close(drain_s=5)
    finally:
        await runner.cleanup()
    assert receiver.posts == 3 and hook.failed == 1


@needs_espeak
async def test_call_finals_reach_webhook_and_late_subscriber(rec, tmp_path):
    receiver = Receiver(failures=1)
    hook_runner, url = await serve_receiver(receiver)
    pcm = speech(tmp_path, TEXTS[0], 8000)
    cid = uuid.uuid4()
    try:
        async with running(rec, audiosocket_port=0, webhook_url=url) as app:
            app.integrations.webhook.backoff_s = 0.01
            r, w = await asyncio.open_connection("127.0.0.1", app.integrations.ports["audiosocket"])
            w.write(audiosocket_frame(0x01, cid.bytes))
            raw = pcm.astype("<i2").tobytes()
            for i in range(0, len(raw), 320):
                w.write(audiosocket_frame(0x10, raw[i : i + 320]))
            w.write(audiosocket_frame(0x03, b"9") + b"\x00\x00\x00")
            await w.drain()
            await asyncio.wait_for(r.read(), 10)
            w.close()
            await asyncio.sleep(0.2)
            # A subscriber arriving after the call ended gets the whole call.
            async with connect(ws_url(app, f"/v1/calls/{cid}/events")) as ws:
                events = [json.loads(m) async for m in ws]
            for _ in range(100):
                if any(e["type"] == "call_end" for e in receiver.ok):
                    break
                await asyncio.sleep(0.05)
    finally:
        await hook_runner.cleanup()
    assert [e["type"] for e in events][0] == "call_start" and events[-1]["type"] == "call_end"
    expected = [rec.transcribe(pcm, 8000).text]
    assert finals(events, "customer") == expected
    assert [e["text"] for e in receiver.ok if e["type"] == "final"] == expected
    assert sorted(e["type"] for e in receiver.ok) == ["call_end", "dtmf", "final"] and receiver.ok[-1]["type"] == "call_end"
    assert all(e["call_id"] == str(cid) for e in receiver.ok)
