"""Incremental CTC search: greedy and prefix beam, with per-token times and confidences.

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

__all__ = ["Hypothesis", "GreedyDecoder", "PrefixBeamDecoder", "make_decoder"]

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


@dataclass
class _Prefix:
    pb: float = NEG_INF  # log-prob of the prefix ending in blank
    pnb: float = NEG_INF  # ... ending in its last token
    frames: tuple[int, ...] = ()
    conf: tuple[float, ...] = ()
    peak: float = NEG_INF  # log-prob of the last token at its recorded frame
    lm: float = 0.0  # LM log-prob of the prefix (0 without an LM)
    lm_state: tuple = ()

    @property
    def total(self) -> float:
        return _logaddexp(self.pb, self.pnb)


def _logaddexp(a: float, b: float) -> float:
    if a == NEG_INF:
        return b
    if b == NEG_INF:
        return a
    m = max(a, b)
    return m + math.log1p(math.exp(-abs(a - b)))


class PrefixBeamDecoder:
    """CTC prefix beam search (blank/non-blank split, merged prefixes), n-best output.

    Per frame only the `beam_size` most likely units are expanded, as in WeNet. With an
    n-gram `lm` (shallow fusion), prefixes are ranked by acoustic + lm_weight * LM +
    lm_bonus * length: the LM is scored once per new unit, and the bonus offsets its bias
    towards short outputs.
    """

    LM_PRUNE = 10.0

    def __init__(self, beam_size: int = 10, blank: int = 0, blank_penalty: float = 0.0, lm=None,
                 lm_weight: float = 0.0, lm_bonus: float = 0.0) -> None:
        self.beam_size = beam_size
        self.blank = blank
        self.blank_penalty = blank_penalty
        self.lm = lm
        self.lm_weight = lm_weight if lm is not None else 0.0
        self.lm_bonus = lm_bonus if lm is not None else 0.0
        # With an LM the search is the costly part: units more than `LM_PRUNE` nats below a
        # frame's best are not expanded (without one the search stays WeNet's, exactly).
        self.prune = self.LM_PRUNE if lm is not None else None
        self.reset()

    def reset(self) -> None:
        self.frames_seen = 0
        start = self.lm.start if self.lm is not None else ()
        self._beams: dict[tuple[int, ...], _Prefix] = {(): _Prefix(pb=0.0, lm_state=start)}

    def _rank(self, item: tuple[tuple[int, ...], _Prefix]) -> float:
        prefix, b = item
        return b.total + self.lm_weight * b.lm + self.lm_bonus * len(prefix)

    def advance(self, logp: torch.Tensor | np.ndarray) -> None:
        lp = _prepare(logp, self.blank, self.blank_penalty)
        if lp is None:
            return
        k = min(self.beam_size, lp.size(-1))
        top_v, top_i = lp.topk(k, dim=-1)
        top_v_l, top_i_l = top_v.tolist(), top_i.tolist()
        prune = self.prune
        for t in range(lp.size(0)):
            ids, vals = top_i_l[t], top_v_l[t]
            if prune is not None:  # drop units far below the frame's best (most frames: all but blank)
                n = sum(1 for v in vals if v >= vals[0] - prune)
                ids, vals = ids[:n], vals[:n]
            self._step(self.frames_seen + t, ids, vals)
        self.frames_seen += lp.size(0)

    def _step(self, frame: int, ids: list[int], vals: list[float]) -> None:
        nxt: dict[tuple[int, ...], _Prefix] = {}

        def get(prefix: tuple[int, ...], src: _Prefix, new_token: bool, v: float) -> _Prefix:
            p = nxt.get(prefix)
            if p is None:
                if new_token:
                    lm, state = src.lm, src.lm_state
                    if self.lm is not None:
                        lp_u, state = self.lm.score(src.lm_state, prefix[-1])
                        lm += lp_u
                    p = _Prefix(frames=src.frames + (frame,), conf=src.conf + (math.exp(v),), peak=v,
                                lm=lm, lm_state=state)
                else:
                    p = _Prefix(frames=src.frames, conf=src.conf, peak=src.peak, lm=src.lm, lm_state=src.lm_state)
                nxt[prefix] = p
            return p

        for prefix, beam in self._beams.items():
            last = prefix[-1] if prefix else None
            for u, v in zip(ids, vals):
                if u == self.blank:
                    p = get(prefix, beam, False, v)
                    p.pb = _logaddexp(p.pb, beam.total + v)
                elif u == last:
                    # *uu -> *u (repeat without blank between)
                    p = get(prefix, beam, False, v)
                    p.pnb = _logaddexp(p.pnb, beam.pnb + v)
                    if v > p.peak and p.frames:
                        p.frames = p.frames[:-1] + (frame,)
                        p.conf = p.conf[:-1] + (math.exp(v),)
                        p.peak = v
                    # *u-u -> *uu (new token after blank)
                    q = get(prefix + (u,), beam, True, v)
                    q.pnb = _logaddexp(q.pnb, beam.pb + v)
                else:
                    q = get(prefix + (u,), beam, True, v)
                    q.pnb = _logaddexp(q.pnb, beam.total + v)
        ranked = sorted(nxt.items(), key=self._rank, reverse=True)[: self.beam_size]
        self._beams = dict(ranked)

    def nbest(self, n: int | None = None) -> list[Hypothesis]:
        ranked = sorted(self._beams.items(), key=self._rank, reverse=True)
        return [Hypothesis(p, b.frames, b.conf, self._rank((p, b))) for p, b in ranked[: n or self.beam_size]]

    def best(self) -> Hypothesis:
        return self.nbest(1)[0]


def make_decoder(method: str, beam_size: int = 10, blank: int = 0, blank_penalty: float = 0.0, lm=None,
                 lm_weight: float = 0.0, lm_bonus: float = 0.0):
    if method == "greedy":
        return GreedyDecoder(blank, blank_penalty)
    if method == "prefix_beam":
        return PrefixBeamDecoder(beam_size, blank, blank_penalty, lm, lm_weight, lm_bonus)
    raise ValueError(f"unknown decoding method {method!r}")
