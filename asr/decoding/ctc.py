"""Incremental CTC search: greedy (here) and prefix beam (`prefix_beam`), with per-token times and confidences.

Both decoders take CTC log-probabilities chunk by chunk (`advance`) and keep their state
between chunks, so decoding a stream in pieces gives exactly what decoding the whole
utterance at once gives. Frame indices are absolute encoder frames since the decoder was
created (or last reset); callers turn them into milliseconds with the frame duration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["Hypothesis", "GreedyDecoder"]

NEG_INF = float("-inf")


def _prepare(logp: torch.Tensor | np.ndarray, blank: int, blank_penalty: float) -> torch.Tensor | None:
    """float32 (frames, vocab) with the blank penalty applied; None when there are no frames."""
    lp = torch.as_tensor(logp, dtype=torch.float32)
    if lp.numel() == 0:
        return None
    if blank_penalty:
        lp = lp.clone()
        lp[:, blank] -= blank_penalty
    return lp


@dataclass(frozen=True)
class Hypothesis:
    """tokens: unit ids; frames: the frame where each token peaked; confidences: the
    posterior of each token at its peak; score: log-probability of the hypothesis."""

    tokens: tuple[int, ...]
    frames: tuple[int, ...]
    confidences: tuple[float, ...]
    score: float = 0.0


class GreedyDecoder:
    """argmax per frame, repeats collapsed, blanks dropped."""

    def __init__(self, blank: int = 0, blank_penalty: float = 0.0) -> None:
        self.blank = blank
        self.blank_penalty = blank_penalty
        self.reset()

    def reset(self) -> None:
        self.frames_seen = 0
        self._prev = self.blank
        self._tokens: list[int] = []
        self._frames: list[int] = []
        self._conf: list[float] = []
        self._score = 0.0

    def advance(self, logp: torch.Tensor | np.ndarray) -> None:
        """logp (frames, vocab) for the next frames of the stream."""
        lp = _prepare(logp, self.blank, self.blank_penalty)
        if lp is None:
            return
        best, ids = lp.max(dim=-1)
        best_l, ids_l = best.tolist(), ids.tolist()
        for t, (tok, score) in enumerate(zip(ids_l, best_l)):
            self._score += score
            if tok != self.blank and tok != self._prev:
                self._tokens.append(tok)
                self._frames.append(self.frames_seen + t)
                self._conf.append(math.exp(score))
            elif tok != self.blank and tok == self._prev and math.exp(score) > self._conf[-1]:
                # Same token continues: keep its most confident frame as its time.
                self._frames[-1] = self.frames_seen + t
                self._conf[-1] = math.exp(score)
            self._prev = tok
        self.frames_seen += len(ids_l)

    def best(self) -> Hypothesis:
        return Hypothesis(tuple(self._tokens), tuple(self._frames), tuple(self._conf), self._score)

    def nbest(self) -> list[Hypothesis]:
        return [self.best()]


def _logaddexp(a: float, b: float) -> float:
    if a == NEG_INF:
        return b
    if b == NEG_INF:
        return a
    m = max(a, b)
    return m + math.log1p(math.exp(-abs(a - b)))
