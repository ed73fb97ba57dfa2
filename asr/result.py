"""Recognition results: tokens with times and confidences, built from CTC hypotheses."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Sequence

from .decoding import Hypothesis
from .tokens import Tokenizer

__all__ = ["Token", "Result", "mean_confidence", "build_result", "shifted", "MAX_TOKEN_MS"]

# Token end times: a CTC peak marks a token's onset; without alignment of the token's
# extent we end it at the next onset, at most this long after its own.
MAX_TOKEN_MS = 400


@dataclass(frozen=True)
class Token:
    text: str
    start: float  # seconds from the stream (or file) start
    end: float
    confidence: float
    id: int


def mean_confidence(tokens: Sequence[Token]) -> float:
    """The geometric mean of the tokens' confidences (0 without tokens)."""
    if not tokens:
        return 0.0
    return math.exp(sum(math.log(max(t.confidence, 1e-10)) for t in tokens) / len(tokens))


@dataclass(frozen=True)
class Result:
    """A recognition result; times in seconds from the start of the audio."""

    text: str
    tokens: tuple[Token, ...]
    start: float
    end: float
    confidence: float
    nbest: tuple[tuple[str, float], ...] = ()
    options: dict = field(default_factory=dict)
    # The units as recognised when `text` is display text (punctuation, ITN: asr.text)
    raw_text: str | None = None

    def to_dict(self) -> dict:
        out = {
            "text": self.text,
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "confidence": round(self.confidence, 4),
            "tokens": [
                {"text": t.text, "start": round(t.start, 3), "end": round(t.end, 3), "confidence": round(t.confidence, 4)}
                for t in self.tokens
            ],
        }
        if self.raw_text is not None:
            out["raw_text"] = self.raw_text
        return out


def build_result(
    nbest: Sequence[Hypothesis], tokenizer: Tokenizer, frame_s: float, t0: float, t_end: float, keep: int,
    options: dict,
) -> Result:
    """Result of the best of `nbest` (the first `keep` listed); t0: time of encoder frame 0,
    t_end: end of the decoded audio, frame_s: seconds per encoder frame."""
    nbest = list(nbest)[:keep]
    best = nbest[0]
    tokens = []
    for i, (tok, frame, conf) in enumerate(zip(best.tokens, best.frames, best.confidences)):
        start = t0 + frame * frame_s
        nxt = t0 + best.frames[i + 1] * frame_s if i + 1 < len(best.frames) else t_end
        end = max(start + frame_s, min(nxt, start + MAX_TOKEN_MS / 1000))
        tokens.append(Token(tokenizer.piece_text(tok), start, end, conf, tok))
    return Result(
        text=tokenizer.decode(best.tokens),
        tokens=tuple(tokens),
        start=tokens[0].start if tokens else t0,
        end=tokens[-1].end if tokens else t_end,
        confidence=mean_confidence(tokens),
        nbest=tuple((tokenizer.decode(h.tokens), h.score) for h in nbest),
        options=options,
    )


def shifted(result: Result, seconds: float) -> Result:
    """`result` with every time moved by `seconds` (e.g. from utterance to stream time)."""
    if not seconds:
        return result
    tokens = tuple(replace(t, start=t.start + seconds, end=t.end + seconds) for t in result.tokens)
    return replace(result, tokens=tokens, start=result.start + seconds, end=result.end + seconds)
