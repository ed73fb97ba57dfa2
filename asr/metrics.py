"""Character error rate on normalised text.

Scoring units: each Han character (or other non-Latin symbol) is one unit, each Latin
word one unit; punctuation and whitespace are removed first, Latin letters upper-cased.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

__all__ = ["score_units", "edit_distance", "ErrorCounts", "cer"]

_WORD = re.compile(r"[A-Za-z0-9']+|\S")


def score_units(text: str) -> list[str]:
    text = unicodedata.normalize("NFKC", text).upper()
    units = []
    for m in _WORD.finditer(text):
        u = m.group()
        if len(u) == 1 and unicodedata.category(u)[0] in "PSZC":
            continue  # punctuation, symbols, separators, controls
        units.append(u)
    return units


def edit_distance(ref: list[str], hyp: list[str]) -> tuple[int, int, int]:
    """(substitutions, deletions, insertions) of a minimum-cost alignment."""
    n, m = len(ref), len(hyp)
    # rows of (cost, sub, del, ins)
    prev = [(j, 0, 0, j) for j in range(m + 1)]
    for i in range(1, n + 1):
        cur = [(i, 0, i, 0)]
        for j in range(1, m + 1):
            if ref[i - 1] == hyp[j - 1]:
                best = prev[j - 1]
            else:
                c, s, d, k = prev[j - 1]
                best = (c + 1, s + 1, d, k)
            c, s, d, k = prev[j]
            if c + 1 < best[0]:
                best = (c + 1, s, d + 1, k)
            c, s, d, k = cur[j - 1]
            if c + 1 < best[0]:
                best = (c + 1, s, d, k + 1)
            cur.append(best)
        prev = cur
    _, s, d, k = prev[m]
    return s, d, k


@dataclass
class ErrorCounts:
    ref_units: int = 0
    sub: int = 0
    dele: int = 0
    ins: int = 0
    utterances: int = 0

    def add(self, ref: str, hyp: str) -> None:
        r, h = score_units(ref), score_units(hyp)
        s, d, i = edit_distance(r, h)
        self.ref_units += len(r)
        self.sub, self.dele, self.ins = self.sub + s, self.dele + d, self.ins + i
        self.utterances += 1

    @property
    def errors(self) -> int:
        return self.sub + self.dele + self.ins

    @property
    def cer(self) -> float:
        return self.errors / max(self.ref_units, 1)


def cer(refs: list[str], hyps: list[str]) -> float:
    counts = ErrorCounts()
    for r, h in zip(refs, hyps, strict=True):
        counts.add(r, h)
    return counts.cer
