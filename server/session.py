"""Sans-I/O streaming session: protocol frames in; engine requests and messages out.

No sockets, no event loop, no clock, no torch. The websocket handler feeds frames
(`receive`), submits the requests it takes (`take_requests`) to the batching engine,
reports each outcome (`complete`) and sends the messages it takes (`take_messages`).
Methods raise `ServerError`s; the handler maps them to an error message and close code.

Per channel the session holds an `asr.recognizer.Stream` as an opaque handle made by the
factory it is given, and at most one engine request in flight. Audio is decoded from the
wire encoding (any byte split; partial sample frames are carried over), de-interleaved
and held back until the stream can complete a chunk (`Stream.samples_until_ready`), so
features are computed once per chunk on the engine's thread, not once per frame here.

Utterances end at an endpoint (`asr.endpoint`) or at the end of the input. The final
result is then either the streaming result (`final_pass="stream"`) or a full-context
re-decoding of the utterance's audio (`final_pass="full"`: `Recognizer.transcribe`; with
`"auto"` the engine falls back to the streaming result when it is behind),
which is more accurate for models trained with dynamic chunks and costs a second
encoder pass over the utterance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Union

import numpy as np

from asr import g711
from asr.config import EndpointConfig
from asr.endpoint import detect_endpoint
from asr.text.options import TextOptions

from .errors import CLOSE_GOING_AWAY, CLOSE_NORMAL, FrameTooLarge, ProtocolError
from .protocol import (
    Audio,
    AudioFormat,
    Done,
    End,
    Final,
    Partial,
    Ready,
    ServerMessage,
    Start,
    TokenInfo,
    parse,
    parse_format,
)

__all__ = ["SessionConfig", "Session", "ChunkRequest", "FinalRequest", "Request", "FINAL_PASSES"]

FINAL_PASSES = ("auto", "full", "stream")


@dataclass(frozen=True)
class SessionConfig:
    model_name: str
    endpoint: EndpointConfig = EndpointConfig()
    final_pass: str = "auto"
    max_frame_bytes: int = 1 << 20
    text: TextOptions = TextOptions()  # defaults of the start options punctuation and itn

    def __post_init__(self) -> None:
        if self.final_pass not in FINAL_PASSES:
            raise ValueError(f"final_pass must be one of {FINAL_PASSES}")


@dataclass(eq=False)
class ChunkRequest:
    """Engine work for one channel: feed `audio` (mono float32 at the stream's rate, or
    None) to `stream` (and `vad`), mark the input finished if `finish`, then run one
    encoder chunk if the stream is ready. The outcome is True when a chunk ran."""

    channel: int
    stream: Any
    audio: Optional[np.ndarray]
    finish: bool = False
    vad: Any = None


@dataclass(eq=False)
class FinalRequest:
    """Engine work ending an utterance: `stream.end_utterance()`; with `audio`, the
    outcome is `Recognizer.transcribe(audio, sample_rate)` instead (times relative to
    the segment, which starts `offset_s` into the stream). `emit`: whether a final is
    sent (False: an utterance without speech, dropped)."""

    channel: int
    stream: Any
    audio: Optional[np.ndarray]
    sample_rate: int
    offset_s: float
    emit: bool
    produced_by: str = ""  # set by the engine: "full", "unrescored" (full pass, rescoring shed) or "stream"
    hotwords: Any = None  # the session's context graph, for the full-context pass


Request = Union[ChunkRequest, FinalRequest]


class _History:
    """A channel's audio from sample index `start` on (the current utterance's)."""

    def __init__(self) -> None:
        self.start = 0
        self._parts: list[np.ndarray] = []
        self._n = 0

    def append(self, x: np.ndarray) -> None:
        self._parts.append(x)
        self._n += x.size

    def _joined(self) -> np.ndarray:
        if len(self._parts) != 1:
            self._parts = [np.concatenate(self._parts) if self._parts else np.zeros(0, np.float32)]
        return self._parts[0]

    def slice(self, first: int, last: int) -> np.ndarray:
        """Samples [first, last) (absolute indices), clipped to what is held."""
        a = self._joined()
        lo, hi = max(first - self.start, 0), max(min(last - self.start, a.size), 0)
        return a[lo:hi].copy() if hi > lo else np.zeros(0, np.float32)

    def drop_before(self, index: int) -> None:
        drop = min(index - self.start, self._n)
        if drop <= 0:
            return
        self._parts = [self._joined()[drop:]]
        self._n -= drop
        self.start += drop


@dataclass(eq=False)
class _Channel:
    stream: Any
    vad: Any = None
    pending: list[np.ndarray] = field(default_factory=list)
    pending_n: int = 0
    received: int = 0  # samples received on this channel
    in_flight: Optional[Request] = None
    finish_sent: bool = False
    done: bool = False
    utterance: int = 0  # index of the utterance being decoded
    text: str = ""  # its current partial text
    decoded_s: float = 0.0
    history: Optional["_History"] = None  # the utterance's audio, for a full-context final

    def take_pending(self) -> Optional[np.ndarray]:
        if not self.pending:
            return None
        audio = self.pending[0] if len(self.pending) == 1 else np.concatenate(self.pending)
        self.pending, self.pending_n = [], 0
        return audio


class Session:
    """One client connection's protocol state. See the module docstring."""

    def __init__(
        self,
        session_id: str,
        config: SessionConfig,
        new_stream: Callable[[int], Any],
        query: Mapping[str, str] | None = None,
        new_vad: Callable[[int], Any] | None = None,
        text: Any = None,
    ) -> None:
        """text: the server's `TextService` (hotword lists, display text); None: finals
        carry the units as recognised."""
        self.id = session_id
        self.config = config
        self._text = text
        self._options = config.text
        self._hotwords: Any = text.context() if text is not None else None
        self._new_stream = new_stream
        self._new_vad = new_vad
        self._format: AudioFormat | None = None
        self._query_format: AudioFormat | None = None
        self._query_error: ProtocolError | None = None
        self._query = {k: v for k, v in (query or {}).items() if k in ("sample_rate", "encoding", "channels")}
        try:
            self._query_format = parse_format(self._query)
        except ProtocolError as e:
            self._query_error = e
        self._started = False  # a start message was accepted
        self._audio_seen = False
        self._ending = False
        self._close_code: int | None = None
        self._final_code = CLOSE_NORMAL
        self._closed = False
        self._carry = b""
        self._channels: list[_Channel] = []
        self._requests: list[Request] = []
        self._messages: list[ServerMessage] = []

    # ------------------------------------------------------------------ state

    @property
    def format(self) -> AudioFormat | None:
        return self._format

    @property
    def ending(self) -> bool:
        """`end` was received (or the server is shutting down): no more input."""
        return self._ending

    @property
    def close_code(self) -> int | None:
        """Set once `done` has been produced: close the connection with this code."""
        return self._close_code

    @property
    def in_flight(self) -> int:
        return sum(ch.in_flight is not None for ch in self._channels)

    @property
    def audio_seconds(self) -> float:
        """Seconds of audio received (per channel, not summed over channels)."""
        if not self._channels or self._format is None:
            return 0.0
        return self._channels[0].received / self._format.sample_rate

    @property
    def backlog_s(self) -> float:
        """Seconds of received audio not yet decoded, on the channel furthest behind."""
        if self._format is None:
            return 0.0
        rate = self._format.sample_rate
        return max((ch.received / rate - ch.decoded_s for ch in self._channels), default=0.0)

    def take_requests(self) -> list[Request]:
        out, self._requests = self._requests, []
        return out

    def take_messages(self) -> list[ServerMessage]:
        out, self._messages = self._messages, []
        return out

    def abort(self) -> None:
        """The connection is gone or failed: produce nothing more."""
        self._closed = True
        self._requests.clear()
        self._messages.clear()

    # ------------------------------------------------------------------ input

    def receive(self, frame: str | bytes) -> None:
        """A websocket frame from the client."""
        if self._closed and self._close_code is None:
            return  # aborted
        size = len(frame.encode("utf-8") if isinstance(frame, str) else frame)
        if size > self.config.max_frame_bytes:
            raise FrameTooLarge(f"frame of {size} bytes exceeds the limit of {self.config.max_frame_bytes} bytes")
        if self._ending:
            raise ProtocolError("nothing may follow an end message", "unexpected_message")
        msg = parse(frame)
        if isinstance(msg, Audio):
            self._on_audio(msg.data)
        elif isinstance(msg, Start):
            self._on_start(msg)
        elif isinstance(msg, End):
            self.end()

    def end(self, going_away: bool = False) -> None:
        """End of input: decode everything received, then send the finals and `done`.
        going_away: the server is shutting down (the close code is then 1001)."""
        if self._closed or self._ending:
            return
        if self._carry and not going_away:
            raise ProtocolError(
                f"the audio ends inside a sample frame: {len(self._carry)} bytes left over "
                f"(frames are {self._format.frame_bytes if self._format else '?'} bytes)",
                "bad_audio",
            )
        self._ending = True
        self._final_code = CLOSE_GOING_AWAY if going_away else CLOSE_NORMAL
        self._schedule()

    def _on_start(self, msg: Start) -> None:
        if self._started:
            raise ProtocolError("start may be sent only once", "unexpected_message")
        if self._audio_seen:
            raise ProtocolError("start must come before any audio", "unexpected_message")
        fmt = parse_format({**self._query, **msg.values})
        opts = msg.options
        self._options = TextOptions(opts.get("punctuation", self._options.punctuation), opts.get("itn", self._options.itn))
        if "hotwords" in opts:
            if self._text is None:
                raise ProtocolError("this endpoint does not take hotwords", "bad_config")
            try:
                self._hotwords = self._text.context(opts["hotwords"])
            except ValueError as e:  # HotwordError
                raise ProtocolError(str(e), "bad_config") from None
        self._started = True
        self._configure(fmt)

    def _configure(self, fmt: AudioFormat) -> None:
        self._format = fmt
        self._channels = [
            _Channel(
                self._new_stream(fmt.sample_rate, hotwords=self._hotwords) if self._hotwords is not None
                else self._new_stream(fmt.sample_rate),
                self._new_vad(fmt.sample_rate) if self._new_vad else None,
                history=_History() if self.config.final_pass != "stream" else None,
            )
            for _ in range(fmt.channels)
        ]
        self._messages.append(Ready(self.id, fmt.sample_rate, fmt.encoding, fmt.channels, self.config.model_name))

    def _on_audio(self, data: bytes) -> None:
        if self._format is None:
            if self._query_error is not None:
                raise ProtocolError(f"audio before a valid configuration: {self._query_error.message}", "bad_config")
            assert self._query_format is not None
            self._configure(self._query_format)
        self._audio_seen = True
        if not data:
            return
        fmt = self._format
        assert fmt is not None
        data = self._carry + data if self._carry else data
        usable = len(data) - len(data) % fmt.frame_bytes
        self._carry = data[usable:]
        if not usable:
            return
        samples = _decode(data[:usable], fmt.encoding)
        frames = samples.reshape(-1, fmt.channels)
        for c, ch in enumerate(self._channels):
            x = np.ascontiguousarray(frames[:, c]) if fmt.channels > 1 else samples
            ch.pending.append(x)
            ch.pending_n += x.size
            ch.received += x.size
            if ch.history is not None:
                ch.history.append(x)
        self._schedule()

    # ------------------------------------------------------------------ engine

    def complete(self, request: Request, outcome: Any) -> None:
        """The engine finished `request`: outcome is True/False for a ChunkRequest (a
        chunk ran or not), the final `Result` for a FinalRequest."""
        if self._closed:
            return
        ch = self._channels[request.channel]
        if ch.in_flight is not request:
            raise RuntimeError("completion for a request that is not in flight")
        ch.in_flight = None
        ch.decoded_s = ch.stream.decoded_s
        if isinstance(request, FinalRequest):
            self._on_final(request, ch, outcome)
        elif outcome:
            self._on_chunk(request.channel, ch)
        self._schedule()

    def _on_chunk(self, c: int, ch: _Channel) -> None:
        st = ch.stream
        res = st.partial()
        if res.text and res.text != ch.text:
            # partials: numbers as figures, and the marks already stable (asr.text.format)
            shown = res
            if self._text is not None:
                shown = self._text.format(res, self._options, final=False)
            self._messages.append(Partial(c, ch.utterance, shown.text, res.start, st.decoded_s))
        ch.text = res.text
        utterance_s = st.decoded_s - st.utterance_start
        if ch.vad is not None:
            # A detector runs ahead of the decoder (it sees all audio handed over): ask it
            # about the silence up to the decoded frontier, so that frame sizes do not
            # matter, and only within this utterance (as the blank count restarts with it).
            trailing = min(ch.vad.trailing_silence_at(st.decoded_s), utterance_s)
        else:
            trailing = st.trailing_blank_s
        ep = detect_endpoint(self.config.endpoint, trailing, utterance_s, bool(res.text))
        if ep is not None:
            self._end_utterance(c, ch, emit=ep.final, at_end=False)

    def _end_utterance(self, c: int, ch: _Channel, emit: bool, at_end: bool) -> None:
        st = ch.stream
        audio, offset = None, 0.0
        if ch.history is not None:
            rate = self._format.sample_rate if self._format else 16000
            if emit:
                first = max(int(round(st.utterance_start * rate)), ch.history.start)
                # Utterances partition the audio at the decoded frontier, whatever the
                # client's frame sizes: the segment does not depend on what else arrived.
                last = ch.received if at_end else int(round(st.decoded_s * rate))
                audio, offset = ch.history.slice(first, last), first / rate
            # The next utterance starts where this one's decoding stopped.
            ch.history.drop_before(int(round(st.decoded_s * rate)))
        req = FinalRequest(c, st, audio, self._format.sample_rate if self._format else 16000, offset, emit,
                           hotwords=self._hotwords)
        ch.in_flight = req
        self._requests.append(req)

    def _on_final(self, req: FinalRequest, ch: _Channel, result: Any) -> None:
        if req.emit:
            off = req.offset_s
            raw = result.text
            if self._text is not None:
                result = self._text.format(result, self._options)
            tokens = tuple(TokenInfo(t.text, t.start + off, t.end + off, t.confidence) for t in result.tokens)
            produced_by = req.produced_by or ("full" if req.audio is not None else "stream")
            self._messages.append(
                Final(req.channel, ch.utterance, result.text, result.start + off, result.end + off, result.confidence,
                      tokens, raw_text=raw, pass_=produced_by)
            )
            ch.utterance += 1
        ch.text = ""
        if ch.finish_sent and not ch.stream.ready():
            ch.done = True

    # ------------------------------------------------------------------ scheduling

    def _schedule(self) -> None:
        """Queue the next request of every idle channel; produce `done` when all is flushed."""
        if self._closed or self._format is None:
            if self._ending and self._format is None and not self._closed:
                self._finish()
            return
        for c, ch in enumerate(self._channels):
            if ch.in_flight is not None or ch.done:
                continue
            st = ch.stream
            req: Request | None = None
            if self._ending and not ch.finish_sent:
                req = ChunkRequest(c, st, ch.take_pending(), True, ch.vad)
                ch.finish_sent = True
            elif st.ready():
                req = ChunkRequest(c, st, ch.take_pending(), False, ch.vad)
            elif not ch.finish_sent and ch.pending_n and ch.pending_n >= st.samples_until_ready():
                req = ChunkRequest(c, st, ch.take_pending(), False, ch.vad)
            elif ch.finish_sent:
                # Everything is decoded: the last utterance ends with the input.
                if ch.text:
                    self._end_utterance(c, ch, emit=True, at_end=True)
                else:
                    ch.done = True
            if req is not None:
                ch.in_flight = req
                self._requests.append(req)
        if self._ending and all(ch.done for ch in self._channels):
            self._finish()

    def _finish(self) -> None:
        self._messages.append(Done(self.audio_seconds))
        self._close_code = self._final_code
        self._closed = True


def _decode(data: bytes, encoding: str) -> np.ndarray:
    """Whole sample frames in the wire encoding -> float32 samples in [-1, 1]."""
    if encoding == "pcm_s16le":
        return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
    if encoding == "pcm_f32le":
        x = np.frombuffer(data, dtype="<f4").astype(np.float32)
        if not np.isfinite(x).all():
            raise ProtocolError("pcm_f32le audio contains NaN or infinite samples", "bad_audio")
        # Full scale is [-1, 1]; finite samples beyond it are clipped, as a converter
        # would (their energy would otherwise overflow the features).
        return np.clip(x, -1.0, 1.0, out=x)
    if encoding == "mulaw":
        return g711.mulaw_decode(data).astype(np.float32) / 32768.0
    if encoding == "alaw":
        return g711.alaw_decode(data).astype(np.float32) / 32768.0
    raise ProtocolError(f"unknown encoding {encoding}", "bad_config")  # parse_format prevents this
