"""Malformed input for every entry point, and a loopback runner that sends it to a real
server and classifies what happened: handled as documented, traceback, or hang.

Used by tests/test_fuzz.py (a bounded number of cases in `make test`) and by
bench/fuzz.py (long runs). A case is a list of frames sent on one connection (str: a
TEXT frame; bytes: BINARY; `Utf8Bad`: a TEXT frame that is not UTF-8), followed by the
endpoint's own end of input so that a case the server accepts still finishes. What is
documented for each endpoint (docs/protocol.md, docs/integrations.md,
docs/reliability.md) is checked by `classify`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import struct
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

ENDPOINTS = ("native", "wenet", "funasr", "vosk", "twilio", "freeswitch", "audiosocket", "http")
HANG_S = 20.0  # a case with no answer after this long is a hang


class Utf8Bad(bytes):
    """Bytes sent as a TEXT frame (not valid UTF-8)."""


# ---------------------------------------------------------------- nasty values

UNICODE_DIGITS = ["²", "①", "¹⁶", "٣", "０", "𝟙𝟞𝟘𝟘𝟘", "Ⅻ", "⁸⁰⁰⁰"]


def nasty_value(rng: random.Random) -> Any:
    """A JSON value of a wrong type, range or shape."""
    pick = rng.randrange(14)
    if pick == 0:
        return rng.choice(UNICODE_DIGITS)
    if pick == 1:
        return "9" * rng.choice([13, 400, 5000])
    if pick == 2:
        return rng.choice([0, -1, 1, 7999, 48001, 2**31, 2**64, -(2**63), 10**30])
    if pick == 3:
        return rng.choice([1e308, -1e308, 16000.5, 5e-324, 0.0, -0.0])
    if pick == 4:
        return rng.choice([True, False, None])
    if pick == 5:
        return rng.choice([[], {}, [16000], {"a": 1}, [None], ["x"] * 3])
    if pick == 6:
        depth = rng.choice([3, 40, 200])
        v: Any = 1
        for _ in range(depth):
            v = [v] if rng.random() < 0.5 else {"k": v}
        return v
    if pick == 7:
        return rng.choice(["", " ", "\x00", "\n", "16000abc", "-1", "1e5", "0x10", " 8000 ", "NaN", "∞"])
    if pick == 8:
        return "".join(chr(rng.randrange(0x20, 0x2FFFF)) for _ in range(rng.randrange(1, 60)))
    if pick == 9:
        return "x" * rng.choice([100, 10_000, 100_000])
    if pick == 10:
        return rng.choice(["\ud800", "a\udfffb", "\ud83d\ude00"])  # lone and paired surrogates
    if pick == 11:
        return rng.choice(["pcm_s16le", "mulaw", "2pass", "online", "inbound", "start", "end"])  # valid-looking
    if pick == 12:
        return rng.choice([16000, 8000, 48000, "16000", "8k", "16k"])
    return rng.random() * 10 ** rng.randrange(0, 12)


def dumps(obj: Any, rng: random.Random) -> str:
    text = json.dumps(obj, ensure_ascii=rng.random() < 0.5)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates travel as JSON escapes (a TEXT frame is UTF-8)
        text = json.dumps(obj)
    r = rng.random()
    if r < 0.05:
        return text.replace("1", "NaN", 1) if "1" in text else text + "NaN"
    if r < 0.08:
        return text.replace("0", "Infinity", 1)
    return text


def broken_text(rng: random.Random) -> str | bytes:
    """A text frame that is not a JSON object of the protocol."""
    pick = rng.randrange(10)
    if pick == 0:
        return Utf8Bad(rng.choice([b"\xff\xfe", b"{\"type\": \"\xc3\x28\"}", b"\xed\xa0\x80", b"\x80abc"]))
    if pick == 1:
        return rng.choice(["{", "}", "[", '"str"', "null", "1", "true", "[]", "", " ", "{\"a\":}", "{'a': 1}"])
    if pick == 2:
        return "[" * rng.choice([33, 1000, 5000]) + "]" * rng.choice([0, 5000])
    if pick == 3:
        return "{" + '"a":{' * 3000 + "}" * 3001
    if pick == 4:
        return json.dumps(nasty_value(rng))
    if pick == 5:
        return "".join(chr(rng.randrange(1, 0x10FFFF)) for _ in range(rng.randrange(1, 50))
                       ).encode("utf-8", "replace").decode("utf-8", "replace")
    if pick == 6:
        return '{"type": "start", "sample_rate": ' + "9" * 5000 + "}"
    if pick == 7:
        return "x" * rng.choice([10, 70_000])
    if pick == 8:
        return '{"a": "\\ud800"}'
    return rng.choice(['{"type": 1}', '{"type": null}', '{"event": 5}', '{"signal": []}', '{"mode": {}}'])


def pcm(rng: random.Random, seconds: float = 0.1) -> bytes:
    n = int(16000 * seconds)
    return bytes(rng.getrandbits(8) for _ in range(2 * n)) if rng.random() < 0.2 else bytes(2 * n)


def junk_binary(rng: random.Random) -> bytes:
    pick = rng.randrange(6)
    if pick == 0:
        return b""
    if pick == 1:
        return bytes([rng.randrange(256)])  # an odd byte: a partial sample
    if pick == 2:
        return struct.pack("<f", float("nan")) * 4
    if pick == 3:
        return struct.pack("<f", 1e38) * 400
    if pick == 4:
        return rng.randbytes(rng.choice([3, 1001, 8000]))
    return bytes(6400)


# ---------------------------------------------------------------- cases per endpoint


def native_case(rng: random.Random) -> tuple[str, list]:
    query = ""
    if rng.random() < 0.25:
        key = rng.choice(["sample_rate", "encoding", "channels", "api_key", "x"])
        val = rng.choice(["%C2%B2", "%E2%91%A0", "9" * 300, "", "abc", "8000", "pcm_f32le", "%FF%FE", "%00", "3", "-1"])
        query = f"?{key}={val}"
    frames: list = []
    for _ in range(rng.randrange(1, 4)):
        pick = rng.randrange(6)
        if pick == 0:
            frames.append(broken_text(rng))
        elif pick in (1, 2):
            keys = rng.sample(["sample_rate", "encoding", "channels", "extra", "type"], rng.randrange(1, 4))
            obj = {"type": "start", **{k: nasty_value(rng) for k in keys}}
            if "type" in keys and rng.random() < 0.5:
                obj["type"] = nasty_value(rng)
            frames.append(dumps(obj, rng))
        elif pick == 3:
            frames.append(junk_binary(rng))
        elif pick == 4:
            frames.append(rng.choice(['{"type": "end"}', '{"type": "end", "x": 1}', '{"type": "start"}']))
        else:
            frames.append(pcm(rng))
    return "/v1/stream" + query, frames


def wenet_case(rng: random.Random) -> tuple[str, list]:
    frames: list = []
    if rng.random() < 0.7:
        obj = {"signal": "start", **{k: nasty_value(rng) for k in rng.sample(["sample_rate", "nbest", "continuous_decoding"], 2)}}
        frames.append(dumps(obj, rng))
    for _ in range(rng.randrange(0, 3)):
        frames.append(rng.choice([broken_text(rng), junk_binary(rng), pcm(rng),
                                  dumps({"signal": nasty_value(rng)}, rng)]))
    return "/wenet", frames


def funasr_case(rng: random.Random) -> tuple[str, list]:
    keys = rng.sample(["mode", "audio_fs", "chunk_size", "hotwords", "wav_name", "wav_format", "itn", "is_speaking"],
                      rng.randrange(1, 5))
    obj = {k: nasty_value(rng) for k in keys}
    if "hotwords" in obj and rng.random() < 0.5:
        obj["hotwords"] = "[" * 5000 + "]" * 5000
    frames: list = [dumps(obj, rng)]
    for _ in range(rng.randrange(0, 3)):
        frames.append(rng.choice([broken_text(rng), junk_binary(rng), pcm(rng),
                                  dumps({"is_speaking": nasty_value(rng)}, rng)]))
    return "/funasr", frames


def vosk_case(rng: random.Random) -> tuple[str, list]:
    frames: list = []
    if rng.random() < 0.6:
        frames.append(dumps({"config": rng.choice([nasty_value(rng), {"sample_rate": nasty_value(rng)}])}, rng))
    for _ in range(rng.randrange(0, 3)):
        frames.append(rng.choice([broken_text(rng), junk_binary(rng), pcm(rng),
                                  dumps({rng.choice(["eof", "reset", "x"]): nasty_value(rng)}, rng)]))
    return "/vosk", frames


def twilio_case(rng: random.Random) -> tuple[str, list]:
    frames: list = []
    sid = "CA" + uuid.UUID(int=rng.getrandbits(128)).hex
    if rng.random() < 0.8:
        frames.append(json.dumps({"event": "start", "start": {"callSid": sid, "streamSid": "MZ" + sid[2:],
                                                              "tracks": ["inbound"]}}))
    for _ in range(rng.randrange(1, 6)):
        pick = rng.randrange(5)
        if pick == 0:
            frames.append(broken_text(rng))
        elif pick == 1:
            frames.append(dumps({"event": "media", "media": {k: nasty_value(rng) for k in
                                                             rng.sample(["track", "timestamp", "payload", "chunk"], 2)}}, rng))
        elif pick == 2:
            frames.append(dumps({"event": "start", "start": rng.choice([nasty_value(rng), {
                "mediaFormat": nasty_value(rng), "tracks": nasty_value(rng), "customParameters": nasty_value(rng),
                "callSid": nasty_value(rng)}])}, rng))
        elif pick == 3:
            frames.append(dumps({"event": rng.choice(["dtmf", "mark", "media", nasty_value(rng)]),
                                 "dtmf": nasty_value(rng), "mark": nasty_value(rng), "media": nasty_value(rng)}, rng))
        else:
            frames.append(junk_binary(rng))
    return "/twilio", frames


def freeswitch_case(rng: random.Random) -> tuple[str, list]:
    query = ""
    if rng.random() < 0.4:
        query = "?" + rng.choice(["rate", "mix", "call_id", "sample_rate"]) + "=" + rng.choice(
            ["%C2%B2", "16k", "9" * 100, "stereo", "", "%00", "8000", "44100", "k"])
    frames: list = []
    if rng.random() < 0.8:
        meta = {k: nasty_value(rng) for k in rng.sample(["sampleRate", "mixType", "callId", "uuid", "x"], 2)}
        frames.append(rng.choice([dumps(meta, rng), broken_text(rng)]))
    for _ in range(rng.randrange(0, 3)):
        frames.append(rng.choice([junk_binary(rng), pcm(rng), broken_text(rng)]))
    return "/freeswitch" + query, frames


def audiosocket_case(rng: random.Random) -> tuple[str, list]:
    frames: list[bytes] = []
    if rng.random() < 0.7:
        frames.append(b"\x01\x00\x10" + rng.randbytes(16))
    for _ in range(rng.randrange(1, 6)):
        pick = rng.randrange(6)
        if pick == 0:
            n = rng.choice([0, 1, 15, 17, 300])
            frames.append(bytes([rng.choice([0x01, 0x03])]) + n.to_bytes(2, "big") + rng.randbytes(n))
        elif pick == 1:
            n = rng.choice([0, 1, 3, 320, 641])
            frames.append(bytes([rng.choice(list(range(0x10, 0x19)))]) + n.to_bytes(2, "big") + rng.randbytes(n))
        elif pick == 2:
            frames.append(bytes([rng.randrange(256)]) + rng.randbytes(rng.randrange(0, 5)))  # torn header
        elif pick == 3:
            n = rng.randrange(0, 200)
            frames.append(bytes([rng.randrange(256)]) + n.to_bytes(2, "big") + rng.randbytes(n))
        elif pick == 4:
            frames.append(b"\xff\x00\x01\x02")
        else:
            frames.append(b"\x10\x01\x40" + bytes(320))
    return "audiosocket", frames


def http_case(rng: random.Random) -> tuple[str, list]:
    """One raw HTTP request to the transcription API, as bytes."""
    boundary = rng.choice(["B", "x" * 70, "", "a b"])
    parts = []
    for _ in range(rng.randrange(0, 4)):
        name = rng.choice(["model", "file", "response_format", "language", "timestamp_granularities[]", "x", ""])
        fname = rng.choice(["", 'a.wav', "a\x00.wav", "é.wav", "x" * 300, "../../etc/passwd", "\r\n"])
        disp = f'form-data; name="{name}"' + (f'; filename="{fname}"' if name == "file" else "")
        value = rng.choice([b"whisper-1", b"json", b"vtt", b"zh", b"RIFF\x24\x00\x00\x00WAVE", rng.randbytes(50),
                            b"\xff\xfe", b"x" * 20_000])
        parts.append(f"--{boundary}\r\nContent-Disposition: {disp}\r\n\r\n".encode("utf-8", "replace") + value + b"\r\n")
    body = b"".join(parts) + (f"--{boundary}--\r\n".encode() if rng.random() < 0.8 else b"")
    ctype = rng.choice([f"multipart/form-data; boundary={boundary}", "application/json", "multipart/form-data", ""])
    auth = rng.choice(["", "Authorization: Bearer \xff\xfe\r\n", "Authorization: Basic x\r\n"])
    chunked = rng.random() < 0.3
    path = "/v1/audio/transcriptions" if rng.random() < 0.9 else rng.choice(["/v1/models", "/x"])
    head = (f"POST {path} HTTP/1.1\r\nHost: x\r\n"
            f"Content-Type: {ctype}\r\n{auth}Connection: close\r\n")
    if chunked:
        head += "Transfer-Encoding: chunked\r\n\r\n"
        body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else b"0\r\n\r\n"
    else:
        head += f"Content-Length: {len(body)}\r\n\r\n"
    return "http", [head.encode("latin-1", "replace") + body]


GENERATORS: dict[str, Callable[[random.Random], tuple[str, list]]] = {
    "native": native_case, "wenet": wenet_case, "funasr": funasr_case, "vosk": vosk_case, "twilio": twilio_case,
    "freeswitch": freeswitch_case, "audiosocket": audiosocket_case, "http": http_case,
}

# The endpoint's own end of input, sent after a case's frames.
END = {
    "native": ['{"type": "end"}'], "wenet": ['{"signal": "end"}'], "funasr": ['{"is_speaking": false, "is_end": true}'],
    "vosk": ['{"eof" : 1}'], "twilio": ['{"event": "stop"}'], "freeswitch": [b""], "audiosocket": [b"\x00\x00\x00"],
}

NATIVE_CODES = {"bad_json", "bad_message", "bad_config", "unexpected_message", "bad_audio", "frame_too_large"}


# ---------------------------------------------------------------- running and classifying


@dataclass
class Tally:
    tried: int = 0
    documented: int = 0
    tracebacks: int = 0
    hangs: int = 0
    undocumented: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, outcome: str, detail: str) -> None:
        self.tried += 1
        setattr(self, outcome, getattr(self, outcome) + 1)
        if outcome != "documented" and len(self.examples) < 5:
            self.examples.append(detail[:300])


class TracebackCounter(logging.Handler):
    """Counts log records that carry a traceback (or are errors) on the server's loggers."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.count = 0
        self.last = ""

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or record.levelno >= logging.ERROR:
            self.count += 1
            self.last = record.getMessage()[:200]


def install_counter() -> TracebackCounter:
    counter = TracebackCounter()
    for name in ("tingxie", "websockets", "aiohttp", "asyncio"):
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() > logging.ERROR:
            logger.setLevel(logging.ERROR)
        logger.addHandler(counter)
    return counter


def remove_counter(counter: TracebackCounter) -> None:
    for name in ("tingxie", "websockets", "aiohttp", "asyncio"):
        logging.getLogger(name).removeHandler(counter)


def classify(endpoint: str, msgs: list, close: int | None) -> bool:
    """Whether the messages and close code are what the docs promise for any input."""
    if endpoint == "native":
        if close in (1000,) and msgs and msgs[-1].get("type") == "done":
            return True
        if close == 1007 or (close == 1009 and not msgs):
            # invalid UTF-8: the RFC's close, no message; a frame over twice the limit is
            # cut off by the websocket layer (docs/protocol.md, frame_too_large)
            return True
        errors = [m for m in msgs if m.get("type") == "error"]
        return close in (1008, 1009) and len(errors) == 1 and errors[0]["code"] in NATIVE_CODES and msgs[-1] == errors[0]
    if endpoint == "wenet":
        if close == 1000:
            return bool(msgs) and msgs[-1].get("type") == "speech_end"
        return close == 1007 or (close in (1008, 1009) and bool(msgs) and msgs[-1].get("status") == "failed") \
            or (close == 1009 and not msgs)
    if endpoint == "funasr":
        if close == 1000:
            return bool(msgs) and msgs[-1].get("is_end") is True and msgs[-1].get("is_final") is True
        return close == 1007 or close == 1009 or (close == 1008 and bool(msgs) and msgs[-1].get("is_final") is False
                                                  and bool(msgs[-1].get("error")))
    if endpoint == "vosk":
        return close in (1000, 1007, 1009) or close == 1011 and all("partial" in m or "text" in m for m in msgs)
    if endpoint == "twilio":
        return close in (1000, 1009)  # malformed messages are skipped; stop ends the call normally
    if endpoint == "freeswitch":
        if close == 1000:
            return all(m.get("type") in ("transcription",) for m in msgs)
        return close in (1007, 1009) or (close == 1008 and bool(msgs) and msgs[-1].get("type") == "error")
    return False


async def run_ws_case(port: int, endpoint: str, path: str, frames: list) -> tuple[list, int | None]:
    async with connect(f"ws://127.0.0.1:{port}{path}", max_size=None, open_timeout=10, ping_interval=None) as ws:
        try:
            for f in frames + END[endpoint]:
                await ws.send(bytes(f), text=True) if isinstance(f, Utf8Bad) else await ws.send(f)
        except ConnectionClosed:
            pass
        msgs = []
        try:
            async for m in ws:
                try:
                    msgs.append(json.loads(m))
                except ValueError:
                    msgs.append({"raw": str(m)[:80]})
        except ConnectionClosed:
            pass
        return msgs, ws.close_code


async def run_tcp_case(port: int, frames: list, http: bool) -> bytes:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    try:
        for f in frames + ([] if http else END["audiosocket"]):
            w.write(f)
            await w.drain()
        return await r.read()
    except ConnectionError:
        return b""
    finally:
        w.close()


async def run_case(ports: dict[str, int], endpoint: str, path: str, frames: list,
                   counter: TracebackCounter, tally: Tally) -> None:
    before = counter.count
    detail = f"{endpoint} {path} {[f[:80] if isinstance(f, (str, bytes)) else f for f in frames]!r}"
    try:
        async with asyncio.timeout(HANG_S):
            if endpoint == "audiosocket":
                back = await run_tcp_case(ports["audiosocket"], frames, http=False)
                ok = back in (b"", b"\x00\x00\x00")
            elif endpoint == "http":
                back = await run_tcp_case(ports["http"], frames, http=True)
                status = back.split(b" ", 2)[1] if back.startswith(b"HTTP/1.1 ") else b""
                ok = status[:1] in (b"2", b"4")
                detail += f" -> {back[:120]!r}"
            else:
                msgs, close = await run_ws_case(ports["ws"], endpoint, path, frames)
                ok = classify(endpoint, msgs, close)
                detail += f" -> close {close} {str(msgs[-2:])[:200]}"
    except TimeoutError:
        tally.add("hangs", detail)
        return
    except InvalidStatus as e:
        ok = e.response.status_code in (400, 401, 404, 503)
        detail += f" -> HTTP {e.response.status_code}"
    except (OSError, ConnectionClosed) as e:
        ok, detail = False, detail + f" -> {type(e).__name__}: {e}"
    await asyncio.sleep(0)  # let the server's handler log what it logs
    if counter.count > before:
        tally.add("tracebacks", detail + " :: " + counter.last)
    elif ok:
        tally.add("documented", detail)
    else:
        tally.add("undocumented", detail)


async def fuzz(ports: dict[str, int], endpoint: str, cases: int, seed: int, counter: TracebackCounter,
               concurrency: int = 8, progress: Callable[[Tally], None] | None = None) -> Tally:
    rng = random.Random(f"{endpoint}-{seed}")
    tally = Tally()
    sem = asyncio.Semaphore(concurrency)
    t_last = time.monotonic()

    async def one(path: str, frames: list) -> None:
        async with sem:
            await run_case(ports, endpoint, path, frames, counter, tally)

    pending: set[asyncio.Task] = set()
    for _ in range(cases):
        path, frames = GENERATORS[endpoint](rng)
        pending.add(asyncio.create_task(one(path, frames)))
        if len(pending) >= 4 * concurrency:
            _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        if progress is not None and time.monotonic() - t_last > 30:
            progress(tally)
            t_last = time.monotonic()
    if pending:
        await asyncio.wait(pending)
    return tally


def messages_in(endpoint: str, seed: int, cases: int) -> int:
    """Malformed messages in `cases` cases (frames other than a plain start and silence)."""
    rng = random.Random(f"{endpoint}-{seed}")
    return sum(len(GENERATORS[endpoint](rng)[1]) for _ in range(cases))
