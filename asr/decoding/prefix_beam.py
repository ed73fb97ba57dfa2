"""CTC prefix beam search, optionally fused with an n-gram LM, scored lazily.

The search is WeNet's (blank / non-blank split, merged prefixes, the `beam_size` most
likely units expanded per frame); this implementation only does less work per frame:

- a prefix already in the beam is updated in place (blank path, repeat path, extension by
  its parent); a frame whose only candidate is blank (most frames: CTC posteriors are
  peaky) costs one addition per prefix;
- a new prefix (a prefix extended by a unit) has a score bound before its LM score is
  known (the LM's best score in that context, `NgramLM.max_score`); candidates are scored
  best bound first, and only while they can still enter the beam, so most are never
  LM-scored or built;
- prefixes are strings of one character per unit (a str caches its hash; tuples do not).

It returns what a plain loop over every (prefix, unit) pair returns, bit for bit: scores,
n-best order (ties in creation order), and each unit's frame and confidence, including
which path's history a merged prefix keeps (the first one to reach it in that loop).

With a `ContextGraph` (hotwords, `asr.decoding.context`) each prefix also carries a state
in the graph and the bonus its matches earned, which counts in its rank; a new prefix's
bound then includes the most one unit can earn. The n-best gives back the bonus of a
match still unfinished.
"""

from __future__ import annotations

import heapq
import math

import numpy as np
import torch

from .ctc import NEG_INF, Hypothesis, _logaddexp, _prepare

__all__ = ["PrefixBeamDecoder"]

_EPS = 1e-6  # slack on score bounds: they add the same terms in another order than the scores
_UNBOUNDED = 1e30  # the bound's LM term under a negative LM weight (finite: -inf + it stays -inf)


class _Beam:
    """One prefix: `key` holds its units as characters; `parent` is the key it extends."""

    __slots__ = ("key", "parent", "last", "pb", "pnb", "frames", "conf", "peak", "lm", "state", "wlm", "bonus", "rank",
                 "ctx", "cscore")

    def __init__(self, key: str, parent: str | None, pb: float, pnb: float, frames: tuple[int, ...],
                 conf: tuple[float, ...], peak: float, lm: float, state: tuple, w: float, bonus: float,
                 ctx: int = 0, cscore: float = 0.0) -> None:
        self.key, self.parent = key, parent
        self.last = ord(key[-1]) if key else -1
        self.pb, self.pnb = pb, pnb
        self.frames, self.conf, self.peak = frames, conf, peak
        self.lm, self.state = lm, state  # LM log-prob of the prefix and the LM state after it
        self.wlm = w * lm  # the rank's LM and length terms, computed once
        self.ctx, self.cscore = ctx, cscore  # context graph state and the bonus earned so far
        self.bonus = bonus * len(key) + cscore
        self.rank = _logaddexp(pb, pnb) + self.wlm + self.bonus


class PrefixBeamDecoder:
    """CTC prefix beam search (blank/non-blank split, merged prefixes), n-best output.

    Per frame only the `beam_size` most likely units are expanded, as in WeNet. With an
    n-gram `lm` (shallow fusion), prefixes are ranked by acoustic + lm_weight * LM +
    lm_bonus * length: the LM is scored once per new unit, and the bonus offsets its bias
    towards short outputs.
    """

    # 5 nats: with beam 20, as accurate as 10 nats and 1.4x the search time of beam 10 at 10
    # (docs/models.md#language-model)
    LM_PRUNE = 5.0

    def __init__(self, beam_size: int = 10, blank: int = 0, blank_penalty: float = 0.0, lm=None,
                 lm_weight: float = 0.0, lm_bonus: float = 0.0, context=None) -> None:
        self.beam_size = beam_size
        self.context = context if context is not None and len(context) else None
        self.blank = blank
        self.blank_penalty = blank_penalty
        self.lm = lm
        self.lm_weight = lm_weight if lm is not None else 0.0
        self.lm_bonus = lm_bonus if lm is not None else 0.0
        # With an LM the search is the costly part: units more than `LM_PRUNE` nats below a
        # frame's best are not expanded (without one the search stays WeNet's, exactly).
        self.prune = self.LM_PRUNE if lm is not None else None
        # New prefixes are bounded with the LM's best score after their prefix (`max_score`),
        # which bounds the fused score only for a non-negative weight.
        self._bounded = self.lm_weight >= 0
        self.reset()

    def reset(self) -> None:
        self.frames_seen = 0
        start = self.lm.start if self.lm is not None else ()
        self._beams = [_Beam("", None, 0.0, NEG_INF, (), (), NEG_INF, 0.0, start, self.lm_weight, self.lm_bonus)]

    def advance(self, logp: torch.Tensor | np.ndarray) -> None:
        lp = _prepare(logp, self.blank, self.blank_penalty)
        if lp is None:
            return
        k = min(self.beam_size, lp.size(-1))
        top_v, top_i = lp.topk(k, dim=-1)
        top_v_l, top_i_l = top_v.tolist(), top_i.tolist()
        prune, blank = self.prune, self.blank
        for t in range(lp.size(0)):
            ids, vals = top_i_l[t], top_v_l[t]
            if prune is not None:  # drop units far below the frame's best (most frames: all but blank)
                n = sum(1 for v in vals if v >= vals[0] - prune)
                ids, vals = ids[:n], vals[:n]
            if len(ids) == 1 and ids[0] == blank:
                self._blank_step(vals[0])
            else:
                self._step(self.frames_seen + t, ids, vals)
        self.frames_seen += lp.size(0)

    def _blank_step(self, v: float) -> None:
        """A frame whose only candidate is blank: every prefix moves to 'ends in blank'."""
        beams = self._beams
        prev = math.inf
        ordered = True
        for b in beams:
            b.pb = _logaddexp(b.pb, b.pnb) + v
            b.pnb = NEG_INF
            b.rank = r = b.pb + b.wlm + b.bonus
            ordered = ordered and r <= prev
            prev = r
        if not ordered:  # rounding can reorder near-ties; the sort is stable, as the full step's
            beams.sort(key=lambda b: -b.rank)

    def _step(self, frame: int, ids: list[int], vals: list[float]) -> None:
        beams, blank, size = self._beams, self.blank, self.beam_size
        w, bonus = self.lm_weight, self.lm_bonus
        width = len(ids)
        jb, vb = -1, 0.0
        pos: dict[int, int] = {}  # unit -> its index among the frame's candidates
        for j, u in enumerate(ids):
            if u == blank:
                jb, vb = j, vals[j]
            else:
                pos[u] = j
        index = {b.key: i for i, b in enumerate(beams)}
        # Entries are ordered by (rank desc, seq): seq is when the plain loop over prefixes
        # (outer) and candidates (inner) first reaches the entry, as its dict insertion order.
        pool: list[tuple] = []
        inherited: set[tuple[int, int]] = set()  # (parent index, unit) that lead to a prefix in the beam
        for m, r in enumerate(beams):
            jl = pos.get(r.last, -1)
            pi = index.get(r.parent, -1) if r.parent is not None else -1
            if jl >= 0 and pi >= 0:
                inherited.add((pi, r.last))
            else:
                pi = -1
            if jb < 0 and jl < 0:
                continue  # nothing reaches this prefix on this frame (nor its parent: that needs jl)
            pb = _logaddexp(r.pb, r.pnb) + vb if jb >= 0 else NEG_INF
            vl = vals[jl] if jl >= 0 else NEG_INF
            pnb = r.pnb + vl
            seq = (m * width + (min(jb, jl) if jb >= 0 and jl >= 0 else max(jb, jl))) * 2
            frames, conf, peak = r.frames, r.conf, r.peak
            if pi >= 0:
                p = beams[pi]
                pnb = _logaddexp(pnb, (p.pb if p.last == r.last else _logaddexp(p.pb, p.pnb)) + vl)
                seq_ext = (pi * width + jl) * 2 + 1
                if seq_ext < seq:  # the parent's extension creates the entry: its history, this frame
                    seq = seq_ext
                    frames, conf, peak = p.frames + (frame,), p.conf + (math.exp(vl),), vl
            if seq % 2 == 0 and jl >= 0 and vl > peak and frames:
                # the repeat path: the unit is more likely here; keep its most confident frame
                frames, conf, peak = frames[:-1] + (frame,), conf[:-1] + (math.exp(vl),), vl
            rank = _logaddexp(pb, pnb) + r.wlm + r.bonus
            pool.append((-rank, seq, m, pb, pnb, frames, conf, peak))
        # New prefixes, lazily: the K best ranks so far bound what can still get in.
        heap = [-e[0] for e in pool]
        heapq.heapify(heap)
        thr = heap[0] - _EPS if len(heap) >= size else NEG_INF
        lm, ctx = self.lm, self.context
        cache = lm._cache if lm is not None else None
        units = list(pos.items())  # (unit, index), best first
        # Candidates in order of their bound, merged across prefixes: each prefix's next unit
        # sits in `heads`; a prefix's bound is tot + c + v, its units come best first.
        heads: list[tuple[float, int, int]] = []
        tots, cs = [], []
        if units:
            v0 = vals[units[0][1]]
            for i, b in enumerate(beams):
                tot = _logaddexp(b.pb, b.pnb)
                if lm is None:
                    c = bonus * (len(b.key) + 1)
                elif self._bounded:
                    c = w * (b.lm + lm.max_score(b.state)) + bonus * (len(b.key) + 1)
                else:
                    c = _UNBOUNDED
                if ctx is not None:
                    c += b.cscore + ctx.max_step
                tots.append(tot)
                cs.append(c)
                if tot + c + v0 >= thr:
                    heads.append((-(tot + c + v0), i, 0))
            heapq.heapify(heads)
        last_k = len(units) - 1
        while heads and -heads[0][0] >= thr:
            _, i, k = heads[0]
            u, j = units[k]
            if k < last_k:
                heapq.heapreplace(heads, (-(tots[i] + cs[i] + vals[units[k + 1][1]]), i, k + 1))
            else:
                heapq.heappop(heads)
            if (i, u) in inherited:
                continue
            b = beams[i]
            a = (b.pb if u == b.last else tots[i]) + vals[j]
            if ctx is not None:  # the unit's own hotword bonus, before any LM scoring
                cstate, delta = ctx.step(b.ctx, u)
                cscore = b.cscore + delta
                if a + cs[i] - ctx.max_step + delta < thr:
                    continue
            elif a + cs[i] < thr:
                continue
            else:
                cstate, cscore = 0, 0.0
            if lm is not None:
                hit = cache.get((b.state, u)) or lm.score(b.state, u)
                lmq = b.lm + hit[0]
            else:
                lmq, hit = b.lm, None
            rank = a + w * lmq + bonus * (len(b.key) + 1) + cscore
            if len(heap) < size:
                heapq.heappush(heap, rank)
            elif rank >= heap[0]:
                heapq.heappushpop(heap, rank)
            else:
                continue  # below the K-th best: out
            if len(heap) >= size:
                thr = heap[0] - _EPS
            pool.append((-rank, (i * width + j) * 2 + 1, -1 - i, a, u, lmq, hit, cstate, cscore))
        pool.sort()
        out = []
        for e in pool[:size]:  # new prefixes first: they copy their parent's history before this frame
            if e[2] < 0:
                _, _, i, a, u, lmq, hit, cstate, cscore = e
                b = beams[-1 - i]
                v = vals[pos[u]]  # a new prefix's unit peaks on this frame
                out.append(_Beam(b.key + chr(u), b.key, NEG_INF, a, b.frames + (frame,), b.conf + (math.exp(v),), v,
                                 lmq, hit[1] if hit is not None else b.state, w, bonus, cstate, cscore))
            else:
                out.append(None)
        for n, e in enumerate(pool[:size]):
            if e[2] >= 0:  # a prefix that was in the beam: update it
                neg, _, m, pb, pnb, frames, conf, peak = e
                r = out[n] = beams[m]
                r.pb, r.pnb, r.frames, r.conf, r.peak, r.rank = pb, pnb, frames, conf, peak, -neg
        self._beams = out

    def nbest(self, n: int | None = None) -> list[Hypothesis]:
        beams = self._beams
        if self.context is None:
            return [Hypothesis(tuple(map(ord, b.key)), b.frames, b.conf, b.rank) for b in beams[: n or self.beam_size]]
        # an unfinished hotword match gives its bonus back (stable sort: ties keep their order)
        pen = self.context.final_penalty
        ranked = sorted(((b.rank + pen(b.ctx), b) for b in beams), key=lambda e: -e[0])
        return [Hypothesis(tuple(map(ord, b.key)), b.frames, b.conf, r) for r, b in ranked[: n or self.beam_size]]

    def best(self) -> Hypothesis:
        return self.nbest(1)[0]
