"""Native streaming protocol v1: message dataclasses, `parse` and `encode`.

Reference: docs/protocol.md. Text frames carry JSON objects with a "type"; binary frames
carry audio in the session's encoding. `parse` turns a frame into a typed client message
or raises `ProtocolError`; `encode` turns a server message into a JSON text frame.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Mapping, Union

from . import validate
from .errors import ProtocolError

__all__ = [
    "PROTOCOL_VERSION",
    "ENCODINGS",
    "SAMPLE_RATES",
    "MAX_CHANNELS",
    "AudioFormat",
    "Start",
    "End",
    "Audio",
    "ClientMessage",
    "Ready",
    "Partial",
    "Final",
    "TokenInfo",
    "Done",
    "Error",
    "ServerMessage",
    "parse",
    "parse_format",
    "parse_text_options",
    "encode",
]

PROTOCOL_VERSION = 1
# Bytes per sample of each wire encoding (little-endian PCM, G.711 octets).
ENCODINGS: dict[str, int] = {"pcm_s16le": 2, "pcm_f32le": 4, "mulaw": 1, "alaw": 1}
SAMPLE_RATES = (8000, 48000)  # inclusive range; audio is resampled to the model's 16 kHz
MAX_CHANNELS = 2
FORMAT_KEYS = ("sample_rate", "encoding", "channels")
# Transcript options in `start` (docs/protocol.md): defaults come from the server's flags.
TEXT_KEYS = ("punctuation", "itn", "hotwords")


# ------------------------------------------------------------------ audio format


@dataclass(frozen=True)
class AudioFormat:
    sample_rate: int = 16000
    encoding: str = "pcm_s16le"
    channels: int = 1

    @property
    def bytes_per_sample(self) -> int:
        return ENCODINGS[self.encoding]

    @property
    def frame_bytes(self) -> int:
        """Bytes of one sample frame (one sample of every channel)."""
        return self.bytes_per_sample * self.channels


def parse_format(values: Mapping[str, Any], base: AudioFormat = AudioFormat()) -> AudioFormat:
    """`base` with the format keys present in `values` applied and validated (values may
    be strings, as in a query string). Keys other than the format keys are ignored here."""
    rate, encoding, channels = base.sample_rate, base.encoding, base.channels
    try:
        if "sample_rate" in values:
            rate = validate.integer("sample_rate", values["sample_rate"])
            if not SAMPLE_RATES[0] <= rate <= SAMPLE_RATES[1]:
                raise validate.FieldError(
                    f"sample_rate {rate} is not supported: use {SAMPLE_RATES[0]} to {SAMPLE_RATES[1]} Hz")
        if "encoding" in values:
            encoding = values["encoding"]
            if not isinstance(encoding, str) or encoding not in ENCODINGS:  # lists and objects: never hashed
                raise validate.FieldError(f"unknown encoding {validate.shown(encoding)}: use one of {', '.join(ENCODINGS)}")
        if "channels" in values:
            channels = validate.integer("channels", values["channels"], 1, MAX_CHANNELS)
    except validate.FieldError as e:
        raise ProtocolError(str(e), "bad_config") from None
    return AudioFormat(rate, encoding, channels)


# ------------------------------------------------------------------ client messages


@dataclass(frozen=True)
class Start:
    """Audio configuration; keys left out keep their query-string (or default) values.
    options: the transcript options given (TEXT_KEYS), types checked."""

    values: Mapping[str, Any] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class End:
    """No more audio: decode everything, send the last finals, then `done`."""


@dataclass(frozen=True)
class Audio:
    data: bytes


ClientMessage = Union[Start, End, Audio]


def parse(frame: str | bytes) -> ClientMessage:
    """A websocket frame as a client message; raises ProtocolError for anything invalid."""
    if isinstance(frame, (bytes, bytearray, memoryview)):
        return Audio(bytes(frame))
    try:
        obj = validate.loads(frame)
    except validate.FieldError as e:
        raise ProtocolError(f"text messages must be JSON objects: {e}", "bad_json") from None
    if not isinstance(obj, dict):
        raise ProtocolError("text messages must be JSON objects", "bad_json")
    kind = obj.get("type")
    if kind == "start":
        unknown = sorted(set(obj) - {"type", *FORMAT_KEYS, *TEXT_KEYS})
        if unknown:
            raise ProtocolError(f"unknown keys in start: {', '.join(unknown)[:200]}", "bad_message")
        values = {k: obj[k] for k in FORMAT_KEYS if k in obj}
        parse_format(values)  # types and ranges checked now, merged with the query later
        return Start(values, parse_text_options(obj))
    if kind == "end":
        unknown = sorted(set(obj) - {"type"})
        if unknown:
            raise ProtocolError(f"unknown keys in end: {', '.join(unknown)[:200]}", "bad_message")
        return End()
    if kind is None:
        raise ProtocolError('text messages need a "type"', "bad_message")
    shown = validate.shown(kind)
    raise ProtocolError(f'unknown message type {shown}: the client sends "start" and "end"', "bad_message")


def parse_text_options(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The transcript options present in `obj`, their types checked (a hotword list's
    content is checked against the model by the session)."""
    out = {}
    for key in ("punctuation", "itn"):
        if key in obj:
            if not isinstance(obj[key], bool):
                raise ProtocolError(f"{key} must be true or false", "bad_config")
            out[key] = obj[key]
    if "hotwords" in obj:
        if not isinstance(obj["hotwords"], (list, dict, str)):
            raise ProtocolError("hotwords must be a list of phrases (strings or {\"phrase\", \"boost\"} objects)",
                                "bad_config")
        out["hotwords"] = obj["hotwords"]
    return out


# ------------------------------------------------------------------ server messages


def _t(seconds: float) -> float:
    return round(seconds, 3)


def _p(probability: float) -> float:
    return round(probability, 4) if math.isfinite(probability) else 0.0


@dataclass(frozen=True)
class Ready:
    type: ClassVar[str] = "ready"
    session: str
    sample_rate: int
    encoding: str
    channels: int
    model: str
    protocol: int = PROTOCOL_VERSION


@dataclass(frozen=True)
class Partial:
    """The utterance's text so far (cumulative); end: how far decoding has got (s)."""

    type: ClassVar[str] = "partial"
    channel: int
    utterance: int
    text: str
    start: float
    end: float


@dataclass(frozen=True)
class TokenInfo:
    text: str
    start: float
    end: float
    confidence: float


@dataclass(frozen=True)
class Final:
    """text: display text (punctuation, ITN as the session asked); raw_text: the units as
    recognised; tokens: display tokens (a rewritten number spans the units it replaced)."""

    type: ClassVar[str] = "final"
    channel: int
    utterance: int
    text: str
    start: float
    end: float
    confidence: float
    tokens: tuple[TokenInfo, ...] = ()
    raw_text: str = ""
    # Which decoding produced the text: "full" (full-context pass over the utterance, with
    # the model's attention rescoring if it has one), "unrescored" (that pass without its
    # rescoring: engine overloaded) or "stream" (the streaming result). Sent as "pass".
    pass_: str = "full"


@dataclass(frozen=True)
class Done:
    type: ClassVar[str] = "done"
    audio_seconds: float


@dataclass(frozen=True)
class Error:
    type: ClassVar[str] = "error"
    code: str
    message: str


ServerMessage = Union[Ready, Partial, Final, Done, Error]


def to_dict(msg: ServerMessage) -> dict[str, Any]:
    out: dict[str, Any] = {"type": msg.type}
    for f in fields(msg):
        v = getattr(msg, f.name)
        if f.name in ("start", "end", "audio_seconds"):
            v = _t(v)
        elif f.name == "confidence":
            v = _p(v)
        elif f.name == "tokens":
            v = [{"text": t.text, "start": _t(t.start), "end": _t(t.end), "confidence": _p(t.confidence)} for t in v]
        out[f.name.rstrip("_")] = v
    return out


def encode(msg: ServerMessage) -> str:
    """A server message as a compact JSON text frame (UTF-8 text, not \\u escapes)."""
    return json.dumps(to_dict(msg), ensure_ascii=False, separators=(",", ":"))
