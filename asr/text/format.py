"""Display text for recognition results: punctuation and ITN, tokens kept aligned.

`Formatter.format(result)` returns the result with `text` as a reader wants it
(我的手机号是13800138000，那个订单3500元。) and `raw_text` the units as recognised. Its
tokens are display tokens: a rewritten number is one token that spans the units it
replaced (its start is the first unit's, its end the last one's, its confidence the
lowest of theirs); a mark is appended to the token before it. Tokens outside rewrites
are the recogniser's own.

A partial (`final=False`) gets only its stable marks: those with at least
`PARTIAL_RIGHT_CONTEXT` symbols after them, since the model decides a mark from the words
on both sides and the words after the end of a partial are not heard yet
(`bench/punctuation.py` measures how many of them the final keeps).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

from ..recognizer import Result, Token
from .itn import spans as itn_spans
from .options import TextOptions
from .punct import LABELS, Punctuator
from .punct import spans as symbol_spans

__all__ = ["TextOptions", "Formatter", "token_chars", "SENTENCE_END", "PARTIAL_RIGHT_CONTEXT"]

SENTENCE_END = "。？！"
PARTIAL_RIGHT_CONTEXT = 4  # symbols heard after a mark before a partial shows it


def token_chars(text: str, tokens: Sequence[Token]) -> list[tuple[int, int]]:
    """Each token's character range in `text` (the decoded units: token texts in order,
    with spaces between Latin words)."""
    out, pos = [], 0
    for t in tokens:
        while pos < len(text) and text[pos].isspace() and not t.text[:1].isspace():
            pos += 1
        a = text.find(t.text, pos) if t.text else pos
        if a < 0:  # not found (a unit without display text): an empty range here
            a = pos
        b = a + len(t.text)
        out.append((a, b))
        pos = b
    return out


class Formatter:
    """Punctuation (when a model is loaded) and ITN for results; thread-safe."""

    def __init__(self, punctuator: Punctuator | None = None) -> None:
        self.punctuator = punctuator

    @classmethod
    def load(cls, punct_dir: str | Path | None) -> "Formatter":
        return cls(Punctuator.load(punct_dir) if punct_dir else None)

    @property
    def can_punctuate(self) -> bool:
        return self.punctuator is not None

    def marks(self, text: str, tokens: Sequence[Token], ranges: list[tuple[int, int]], final: bool) -> dict[int, str]:
        """{character end position: mark} for `text`."""
        if self.punctuator is None:
            return {}
        sp = symbol_spans(text)
        if not sp:
            return {}
        # the pause after each symbol: from its last unit's onset to the next symbol's first
        # (symbols and tokens are both in text order: one walk over the tokens)
        first: list[float | None] = []
        last: list[float | None] = []
        ti = 0
        for _, (a, b) in sp:
            while ti < len(ranges) and ranges[ti][1] <= a:
                ti += 1
            tj, lo, hi = ti, None, None
            while tj < len(ranges) and ranges[tj][0] < b:
                lo = tokens[tj].start if lo is None else lo
                hi = tokens[tj].start
                tj += 1
            first.append(lo)
            last.append(hi)
        pauses = [(first[i + 1] - last[i]) if i + 1 < len(sp) and first[i + 1] is not None and last[i] is not None
                  else 0.0 for i in range(len(sp))]
        labels = self.punctuator.predict([s for s, _ in sp], pauses, final=final)
        if not final:  # the stable part: marks with enough heard after them
            labels = labels[: max(0, len(sp) - PARTIAL_RIGHT_CONTEXT)]
        return {b: LABELS[lab] for (_, (a, b)), lab in zip(sp, labels) if lab}

    def format(self, result: Result, options: TextOptions = TextOptions(), final: bool = True) -> Result:
        """`result` with display text and tokens (unchanged when options do nothing)."""
        punct = options.punctuation and self.punctuator is not None
        if not (punct or options.itn) or not result.text:
            return result
        text, tokens = result.text, result.tokens
        ranges = token_chars(text, tokens)
        marks = self.marks(text, tokens, ranges, final) if punct else {}
        rewrites: list[tuple[int, int, str]] = []
        if options.itn:  # numbers never run across a mark
            cuts = [0, *sorted(marks), len(text)]
            for a, b in zip(cuts, cuts[1:]):
                rewrites.extend((a + x, a + y, rep) for x, y, rep in itn_spans(text[a:b]))
        groups: list[tuple[Token, int]] = []  # display token, raw character end
        ti, n = 0, len(tokens)
        for a, b, rep in rewrites:
            while ti < n and ranges[ti][1] <= a:
                groups.append((tokens[ti], ranges[ti][1]))
                ti += 1
            covered = []
            while ti < n and ranges[ti][0] < b:
                covered.append(tokens[ti])
                ti += 1
            if covered:
                token = Token(rep, min(t.start for t in covered), max(t.end for t in covered),
                              min(t.confidence for t in covered), -1)
                groups.append((token, max(b, ranges[ti - 1][1])))
        groups.extend((tokens[i], ranges[i][1]) for i in range(ti, n))
        out_tokens = [dataclasses.replace(t, text=t.text + marks[e]) if e in marks else t for t, e in groups]
        pieces: list[str] = []
        pos = 0
        rw = {a: (b, rep) for a, b, rep in rewrites}
        while pos < len(text):
            if pos in rw:
                pos, rep = rw[pos]
                pieces.append(rep)
            else:
                pieces.append(text[pos])
                pos += 1
            if pos in marks:
                pieces.append(marks[pos])
                while pos < len(text) and text[pos].isspace():
                    pos += 1  # no space after a mark
        return dataclasses.replace(result, text="".join(pieces), tokens=tuple(out_tokens), raw_text=result.text)

