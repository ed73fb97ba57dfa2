"""Asterisk AudioSocket over TCP (`--audiosocket-port`).

Framing: `kind u8 | length u16 big-endian | payload[length]`. Kinds: 0x00 hangup,
0x01 UUID (16 bytes, the call id), 0x03 DTMF (one ASCII digit), 0x10 slin 8 kHz,
0x11-0x18 slin at 12, 16, 24, 32, 44.1, 48, 96, 192 kHz, 0xff error. Asterisk sends
every non-slin codec as 0x10 too (`Dial(AudioSocket/...c(ulaw))`, older releases), so a
listener can be told what 0x10 carries (`--audiosocket-format slin|ulaw|alaw`).

`FrameReader` is the sans-I/O parser (bytes in, frames out). The async handler runs one
`SessionRunner` per connection and publishes results to subscribers (AudioSocket has no
reply path). We only ever send 0x00 (hangup), and only for a malformed stream: any
other kind would make Asterisk end the session anyway.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np

from .calls import Call, CallIdInUse
from .runner import SessionRunner

__all__ = ["KIND_RATES", "HANGUP", "Frame", "FrameReader", "AudioSocketError", "audiosocket_frame", "handle_audiosocket"]

log = logging.getLogger("tingxie.telephony")

KIND_HANGUP, KIND_UUID, KIND_DTMF, KIND_ERROR = 0x00, 0x01, 0x03, 0xFF
KIND_RATES = {0x10: 8000, 0x11: 12000, 0x12: 16000, 0x13: 24000, 0x14: 32000, 0x15: 44100, 0x16: 48000,
              0x17: 96000, 0x18: 192000}
HANGUP = b"\x00\x00\x00"
FORMATS = {"slin": "pcm_s16le", "ulaw": "mulaw", "alaw": "alaw"}
MAX_RATE = 48000


class AudioSocketError(ValueError):
    pass


@dataclass(frozen=True)
class Frame:
    kind: int
    payload: bytes


def audiosocket_frame(kind: int, payload: bytes = b"") -> bytes:
    return bytes([kind]) + len(payload).to_bytes(2, "big") + payload


class FrameReader:
    """Bytes in (any split), whole frames out."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        out = []
        while len(self._buf) >= 3:
            n = int.from_bytes(self._buf[1:3], "big")
            if len(self._buf) < 3 + n:
                break
            out.append(Frame(self._buf[0], bytes(self._buf[3 : 3 + n])))
            del self._buf[: 3 + n]
        return out

    @property
    def pending(self) -> int:
        return len(self._buf)


class _Decimator:
    """slin above 48 kHz -> 48 kHz by averaging groups of `factor` samples (int16 LE)."""

    def __init__(self, factor: int) -> None:
        self.factor = factor
        self._carry = b""

    def __call__(self, data: bytes) -> bytes:
        data = self._carry + data
        step = 2 * self.factor
        usable = len(data) - len(data) % step
        self._carry = data[usable:]
        x = np.frombuffer(data[:usable], "<i2").astype(np.int32).reshape(-1, self.factor)
        return x.mean(axis=1).round().astype("<i2").tobytes()


def check_frame(f: Frame) -> None:
    if f.kind == KIND_UUID and len(f.payload) != 16:
        raise AudioSocketError(f"a UUID frame has 16 bytes, not {len(f.payload)}")
    if f.kind == KIND_DTMF and (len(f.payload) != 1 or not 0x20 < f.payload[0] < 0x7F):
        raise AudioSocketError("a DTMF frame has one ASCII digit")


async def handle_audiosocket(integ: Any, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                             slin8_format: str = "slin") -> None:
    call: Call | None = None
    runner: SessionRunner | None = None
    rate: int | None = None
    decimate: _Decimator | None = None
    reason, hang_up = "hangup", False
    samples_per_byte = 0.5 if slin8_format == "slin" else 1.0
    received = 0
    try:
        while True:
            try:
                async with asyncio.timeout(integ.app.settings.idle_timeout_s):
                    head = await reader.readexactly(3)
                    payload = await reader.readexactly(int.from_bytes(head[1:3], "big"))
            except TimeoutError:
                reason, hang_up = "idle", True
                break
            f = Frame(head[0], payload)
            try:
                check_frame(f)
            except AudioSocketError as e:
                log.warning("audiosocket %s: %s: hanging up", call.id if call else "?", e)
                integ.app.metrics.errors.labels(code="audiosocket_bad_frame").inc()
                reason, hang_up = "error", True
                break
            if f.kind == KIND_HANGUP:
                break
            if f.kind == KIND_UUID:
                if call is None:
                    try:
                        call = Call(integ.hub, str(uuid.UUID(bytes=f.payload)), "audiosocket", {"format": slin8_format})
                    except CallIdInUse as e:
                        log.warning("audiosocket: %s: hanging up", e)
                        integ.app.metrics.errors.labels(code="audiosocket_call_id_in_use").inc()
                        reason, hang_up = "error", True
                        break
                continue
            if call is None:  # Asterisk sends the UUID first; tolerate its absence
                call = Call(integ.hub, integ.new_id(), "audiosocket", {"format": slin8_format})
            if f.kind == KIND_DTMF:
                call.dtmf(chr(f.payload[0]), "customer", received / (rate or 8000))
            elif f.kind in KIND_RATES:
                r = KIND_RATES[f.kind]
                if runner is None:
                    rate = r
                    enc = FORMATS[slin8_format] if f.kind == 0x10 else "pcm_s16le"
                    if f.kind != 0x10:
                        samples_per_byte = 0.5
                    if r > MAX_RATE:
                        decimate = _Decimator(r // MAX_RATE)
                    runner = SessionRunner(integ.app, call.id, {"sample_rate": min(r, MAX_RATE), "encoding": enc},
                                           call.handler(0, "customer"))
                elif r != rate:
                    log.warning("audiosocket %s: the rate changed mid-call (%d -> %d): frame dropped", call.id, rate, r)
                    continue
                received += int(len(f.payload) * samples_per_byte)
                runner.feed(decimate(f.payload) if decimate else f.payload)
                if runner.failed:
                    reason, hang_up = "error", True
                    break
                await runner.wait_capacity()
            elif f.kind == KIND_ERROR:
                log.warning("audiosocket %s: Asterisk reports error %s", call.id, f.payload.hex() or "-")
                reason = "error"
                break
            else:
                log.info("audiosocket %s: frame kind 0x%02x ignored", call.id, f.kind)
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        try:
            if hang_up:
                writer.write(HANGUP)
                await writer.drain()
        except ConnectionError:
            pass
        if call is not None:
            await integ.finish_call(call, [runner] if runner else [], reason)
        writer.close()
