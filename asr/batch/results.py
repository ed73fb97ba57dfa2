"""Batch results: per-utterance segments and per-input transcripts, as plain data that
round-trips through dicts (the Ray mode ships segments between processes as JSON)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from ..recognizer import Result, Token, mean_confidence

__all__ = ["Segment", "Transcript", "join_texts"]


def _tok_dict(t: Token) -> dict[str, Any]:
    return {"text": t.text, "start": round(t.start, 3), "end": round(t.end, 3), "confidence": round(t.confidence, 4)}


@dataclass(frozen=True)
class Segment:
    """One utterance found by the VAD: [start, end) seconds on the file's clock (the
    audio that was recognised), its text and tokens (absolute times)."""

    start: float
    end: float
    text: str
    confidence: float
    tokens: tuple[Token, ...]
    channel: int | None = None  # set when channels are recognised separately
    raw_text: str | None = None  # the units as recognised, when `text` is display text

    def formatted(self, formatter: Any, options: Any) -> "Segment":
        """This segment with display text and tokens (`asr.text.format.Formatter`)."""
        res = formatter.format(Result(self.text, self.tokens, self.start, self.end, self.confidence), options)
        if res.raw_text is None:
            return self
        return Segment(self.start, self.end, res.text, self.confidence, res.tokens, self.channel, self.text)

    @classmethod
    def from_result(
        cls, result: Result, start: float, end: float, channel: int | None = None,
        keep: tuple[float | None, float | None] = (None, None), decode: Callable[[list[int]], str] | None = None,
    ) -> "Segment":
        """keep: the bounds of a piece cut from longer speech (`asr.batch.vad.Region`);
        tokens starting outside them belong to the neighbouring piece and are dropped,
        and the text is rebuilt from those left by `decode` (the tokenizer's)."""
        lo, hi = keep
        if lo is None and hi is None:
            return cls(start, end, result.text, result.confidence, result.tokens, channel)
        if decode is None:
            raise ValueError("trimming a result to its kept span needs the tokenizer's decode")
        toks = tuple(t for t in result.tokens if (lo is None or t.start >= lo) and (hi is None or t.start < hi))
        start, end = start if lo is None else lo, end if hi is None else hi
        return cls(start, end, decode([t.id for t in toks]), mean_confidence(toks), toks, channel)

    def to_dict(self, exact: bool = False) -> dict[str, Any]:
        """Rounded for output; exact=True keeps full precision and ids (for transport)."""
        d: dict[str, Any]
        if exact:
            d = {
                "start": self.start, "end": self.end, "text": self.text, "confidence": self.confidence,
                "tokens": [[t.text, t.start, t.end, t.confidence, t.id] for t in self.tokens],
            }
        else:
            d = {
                "start": round(self.start, 3), "end": round(self.end, 3), "text": self.text,
                "confidence": round(self.confidence, 4), "tokens": [_tok_dict(t) for t in self.tokens],
            }
        if self.channel is not None:
            d["channel"] = self.channel
        if self.raw_text is not None:
            d["raw_text"] = self.raw_text
        return d

    @classmethod
    def from_exact(cls, d: dict[str, Any]) -> "Segment":
        tokens = tuple(Token(t[0], t[1], t[2], t[3], t[4]) for t in d["tokens"])
        return cls(d["start"], d["end"], d["text"], d["confidence"], tokens, d.get("channel"), d.get("raw_text"))


def join_texts(texts: list[str]) -> str:
    """Segment texts as one text: Han joined directly, a space between Latin words."""
    out = ""
    for t in texts:
        if not t:
            continue
        if out and out[-1].isascii() and out[-1].isalnum() and t[0].isascii() and t[0].isalnum():
            out += " "
        out += t
    return out


@dataclass(frozen=True)
class Transcript:
    """All segments of one input, in time order (channels interleaved when split)."""

    id: str
    path: str
    duration: float
    segments: tuple[Segment, ...]
    channels: int = 1  # rows recognised: 1 when mixed down
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return join_texts([s.text for s in self.segments])

    def channel_text(self, channel: int) -> str:
        return join_texts([s.text for s in self.segments if s.channel == channel])

    @property
    def tokens(self) -> tuple[Token, ...]:
        return tuple(t for s in self.segments for t in s.tokens)

    @property
    def confidence(self) -> float:
        return mean_confidence(self.tokens)

    def to_dict(self) -> dict[str, Any]:
        """The JSON/JSONL record. `file`, `text`, `start`, `end`, `confidence` and
        `tokens` keep the meaning `tingxie transcribe --json` always gave them."""
        toks = self.tokens
        d: dict[str, Any] = {
            "id": self.id,
            "file": self.path,
            "duration": round(self.duration, 3),
            "text": self.text,
            "start": round(toks[0].start, 3) if toks else 0.0,
            "end": round(toks[-1].end, 3) if toks else round(self.duration, 3),
            "confidence": round(self.confidence, 4),
            "tokens": [_tok_dict(t) for t in toks],
            "segments": [s.to_dict() for s in self.segments],
        }
        if self.channels > 1:
            d["channels"] = self.channels
            d["channel_text"] = [self.channel_text(c) for c in range(self.channels)]
        if self.options:
            d["options"] = self.options
        return d
