"""Hotwords: a context graph that biases the CTC prefix beam search towards phrases.

The phrases' units form an Aho-Corasick trie. A hypothesis carries a state in it; each
unit that extends a match earns the phrase's boost (log-score per unit), a completed
phrase keeps what it earned (the state returns to the root), and a match that breaks
off gives its bonus back (the step's score is the new state's accumulated bonus minus
the old one's, so falling back along a failure link subtracts the unmatched part).
At the end of an utterance an unfinished match gives its bonus back too
(`ContextGraph.final_penalty`). The same scheme as icefall's and sherpa-onnx's
`ContextGraph` and WeNet's context graph, written for this search.

`parse_hotwords` turns what a client sends into (phrase, boost) pairs, within limits.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

__all__ = ["ContextGraph", "HotwordError", "HotwordLimits", "parse_hotwords", "prompt_hotwords", "DEFAULT_BOOST"]

DEFAULT_BOOST = 2.0  # log-score per matched unit (docs/benchmarks.md#hotwords)


class HotwordError(ValueError):
    """A hotword list that cannot be used; the message says why."""


@dataclass(frozen=True)
class HotwordLimits:
    max_phrases: int = 1000
    max_units: int = 32  # per phrase
    max_boost: float = 10.0


class ContextGraph:
    """Aho-Corasick trie over unit ids; states are node indices (0: the root)."""

    def __init__(self, phrases: Iterable[tuple[Sequence[int], float]]) -> None:
        self.children: list[dict[int, int]] = [{}]
        self.score: list[float] = [0.0]  # accumulated bonus from the root to the node
        self.end: list[bool] = [False]
        self.fail: list[int] = [0]
        self.phrases = 0
        for units, boost in phrases:
            if not units:
                continue
            self.phrases += 1
            node = 0
            for u in units:
                nxt = self.children[node].get(u)
                if nxt is None:
                    nxt = len(self.children)
                    self.children[node][u] = nxt
                    self.children.append({})
                    self.score.append(self.score[node] + boost)
                    self.end.append(False)
                    self.fail.append(0)
                else:  # shared prefix: the larger boost
                    self.score[nxt] = max(self.score[nxt], self.score[node] + boost)
                node = nxt
            self.end[node] = True
        self.max_step = max((self.score[c] - self.score[n] for n, ch in enumerate(self.children)
                             for c in ch.values()), default=0.0)
        self._build_fail()
        self._goto: dict[tuple[int, int], int] = {}

    def _build_fail(self) -> None:
        queue = deque(self.children[0].values())
        while queue:
            n = queue.popleft()
            for u, c in self.children[n].items():
                f = self.fail[n]
                while f and u not in self.children[f]:
                    f = self.fail[f]
                self.fail[c] = self.children[f].get(u, 0)
                queue.append(c)

    def __len__(self) -> int:
        return self.phrases

    def step(self, state: int, unit: int) -> tuple[int, float]:
        """(next state, score change) for a hypothesis in `state` that emits `unit`."""
        key = (state, unit)
        hit = self._goto.get(key)
        if hit is None:
            n = state
            while n and unit not in self.children[n]:
                n = self.fail[n]
            n = self.children[n].get(unit, 0)
            hit = self._goto[key] = n
        delta = self.score[hit] - self.score[state]
        return (0 if self.end[hit] else hit), delta

    def final_penalty(self, state: int) -> float:
        """What an utterance that ends in `state` gives back (its unfinished match)."""
        return -self.score[state]


_SPLIT = re.compile(r"[\s,，、;；。.!！?？:：\"“”'‘’()（）\[\]【】《》]+")


def _phrase_units(text: str, tokenizer) -> list[int] | None:
    ids = tokenizer.encode(text)
    return None if tokenizer.unk is not None and tokenizer.unk in ids else ids


def parse_hotwords(value: Any, tokenizer, limits: HotwordLimits = HotwordLimits(),
                   default_boost: float = DEFAULT_BOOST) -> list[tuple[list[int], float]]:
    """(units, boost) for each hotword in `value`: a list of phrases, each a string or
    {"phrase": str, "boost": number}; a {phrase: boost} object; or a string with one
    phrase a line ("phrase" or "phrase boost"). Raises HotwordError for anything else,
    for lists or phrases over the limits, and for phrases the model cannot spell."""
    items: list[tuple[str, Any]] = []
    if isinstance(value, str):
        for line in value.splitlines():
            parts = line.strip().rsplit(None, 1)
            if len(parts) == 2 and re.fullmatch(r"[0-9.]+", parts[1]):
                items.append((parts[0], float(parts[1])))
            elif line.strip():
                items.append((line.strip(), None))
    elif isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, list):
        for v in value:
            if isinstance(v, str):
                items.append((v, None))
            elif isinstance(v, dict) and set(v) <= {"phrase", "boost"} and "phrase" in v:
                items.append((v["phrase"], v.get("boost")))
            else:
                raise HotwordError('each hotword must be a string or {"phrase": ..., "boost": ...}')
    else:
        raise HotwordError("hotwords must be a list of phrases, a {phrase: boost} object or a string")
    if len(items) > limits.max_phrases:
        raise HotwordError(f"too many hotwords: {len(items)} (at most {limits.max_phrases})")
    out = []
    for phrase, boost in items:
        if not isinstance(phrase, str) or not phrase.strip():
            raise HotwordError("a hotword must be a non-empty string")
        if boost is None:
            boost = default_boost
        if isinstance(boost, bool) or not isinstance(boost, (int, float)) or not 0 <= boost <= limits.max_boost:
            raise HotwordError(f"the boost of hotword {phrase[:40]!r} must be a number from 0 to {limits.max_boost}")
        units = _phrase_units(phrase.strip(), tokenizer)
        if units is None:
            raise HotwordError(f"hotword {phrase[:40]!r} has characters this model cannot recognise")
        if len(units) > limits.max_units:
            raise HotwordError(f"hotword {phrase[:40]!r} is too long: {len(units)} units (at most {limits.max_units})")
        out.append((units, float(boost)))
    return out


def prompt_hotwords(prompt: str, tokenizer, limits: HotwordLimits = HotwordLimits(),
                    default_boost: float = DEFAULT_BOOST) -> list[tuple[list[int], float]]:
    """Hotwords from free text (the OpenAI API's `prompt`): its words and phrases between
    spaces and punctuation, those the model can spell and within the limits; the rest
    is ignored, as a prompt is a hint, not a command."""
    out = []
    for piece in _SPLIT.split(prompt):
        units = _phrase_units(piece, tokenizer) if piece else None
        if units and 2 <= len(units) <= limits.max_units:
            out.append((units, default_boost))
        if len(out) >= limits.max_phrases:
            break
    return out
