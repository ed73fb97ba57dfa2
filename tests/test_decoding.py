import itertools
import math

import numpy as np
import pytest
import torch

from asr.decoding import GreedyDecoder, PrefixBeamDecoder
from asr.decoding.ctc import _logaddexp
from asr.lm import NgramCounts, NgramLM, estimate


def random_logp(frames: int, vocab: int, seed: int, blank_bias: float = 1.5) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = 2 * torch.randn(frames, vocab, generator=g)
    x[:, 0] += blank_bias
    return torch.log_softmax(x, dim=-1)


def collapse(path):
    out, prev = [], None
    for p in path:
        if p != 0 and p != prev:
            out.append(p)
        prev = p
    return tuple(out)


def exact_prefix_probs(logp: torch.Tensor) -> dict[tuple, float]:
    """Sum over every CTC alignment (brute force, tiny inputs only)."""
    probs: dict[tuple, float] = {}
    lp = logp.double().numpy()
    for path in itertools.product(range(lp.shape[1]), repeat=lp.shape[0]):
        s = sum(lp[t, u] for t, u in enumerate(path))
        key = collapse(path)
        probs[key] = np.logaddexp(probs.get(key, -np.inf), s)
    return probs


def feed(decoder, logp: torch.Tensor, sizes):
    i = 0
    for n in sizes:
        decoder.advance(logp[i : i + n])
        i += n
    decoder.advance(logp[i:])
    return decoder


def test_greedy_collapses_repeats_and_blanks():
    ids = [0, 3, 3, 0, 3, 4, 4, 0, 0, 5]
    lp = torch.full((len(ids), 6), -10.0)
    for t, u in enumerate(ids):
        lp[t, u] = -0.01
    d = GreedyDecoder()
    d.advance(lp)
    assert d.best().tokens == (3, 3, 4, 5)
    assert d.best().frames == (1, 4, 5, 9)


@pytest.mark.parametrize("sizes", [[1] * 40, [7, 13], [3, 0, 5, 11]])
def test_greedy_incremental_equals_whole(sizes):
    lp = random_logp(60, 9, 1)
    whole = GreedyDecoder()
    whole.advance(lp)
    assert feed(GreedyDecoder(), lp, sizes).best() == whole.best()


@pytest.mark.parametrize("sizes", [[1] * 40, [7, 13], [3, 0, 5, 11]])
def test_prefix_beam_incremental_equals_whole(sizes):
    lp = random_logp(60, 9, 2)
    whole = PrefixBeamDecoder(8)
    whole.advance(lp)
    assert feed(PrefixBeamDecoder(8), lp, sizes).nbest() == whole.nbest()


def test_prefix_beam_scores_are_exact_with_a_wide_beam():
    lp = random_logp(5, 3, 3, blank_bias=0.0)
    exact = exact_prefix_probs(lp)
    d = PrefixBeamDecoder(beam_size=100)
    d.advance(lp)
    for hyp in d.nbest(10):
        assert math.isclose(hyp.score, exact[hyp.tokens], abs_tol=1e-4)
    best_exact = max(exact, key=exact.get)
    assert d.best().tokens == best_exact


def test_prefix_beam_nbest_sorted_and_distinct():
    lp = random_logp(30, 7, 4)
    d = PrefixBeamDecoder(6)
    d.advance(lp)
    nb = d.nbest()
    assert len(nb) == 6
    assert [h.score for h in nb] == sorted((h.score for h in nb), reverse=True)
    assert len({h.tokens for h in nb}) == 6
    for h in nb:
        assert len(h.frames) == len(h.tokens) == len(h.confidences)
        assert list(h.frames) == sorted(h.frames)
        assert all(0 < c <= 1 for c in h.confidences)


def test_confident_path_gives_same_answer_for_both_decoders():
    ids = [0, 5, 5, 0, 0, 2, 0, 2, 2, 0, 7]
    lp = torch.full((len(ids), 8), -8.0)
    for t, u in enumerate(ids):
        lp[t, u] = 0.0
    lp = torch.log_softmax(lp, -1)
    g, b = GreedyDecoder(), PrefixBeamDecoder(4)
    g.advance(lp)
    b.advance(lp)
    assert g.best().tokens == b.best().tokens == (5, 2, 2, 7)


# --- the lazily scored prefix beam against the plain search it must reproduce -------------------------------


class ReferencePrefixBeam:
    """The plain search: every (prefix, unit) pair of every frame, the LM scored for each new
    prefix (what PrefixBeamDecoder did before it scored lazily). Ties keep creation order."""

    def __init__(self, beam, lm=None, w=0.0, bonus=0.0):
        self.beam, self.lm, self.w, self.bonus = beam, lm, w, bonus
        self.prune = PrefixBeamDecoder.LM_PRUNE if lm is not None else None
        self.t = 0
        # prefix -> [pb, pnb, frames, conf, peak, lm, lm_state]
        self.beams = {(): [0.0, -math.inf, (), (), -math.inf, 0.0, lm.start if lm is not None else ()]}

    def rank(self, item):
        p, b = item
        return _logaddexp(b[0], b[1]) + self.w * b[5] + self.bonus * len(p)

    def advance(self, logp):
        vals, ids = logp.topk(min(self.beam, logp.size(1)), dim=-1)
        for vs, us in zip(vals.tolist(), ids.tolist()):
            if self.prune is not None:
                n = sum(1 for v in vs if v >= vs[0] - self.prune)
                vs, us = vs[:n], us[:n]
            self.step(us, vs)
            self.t += 1

    def step(self, units_, vals):
        nxt = {}

        def get(prefix, src, new, v):
            if prefix not in nxt:
                if new:
                    lm, state = src[5], src[6]
                    if self.lm is not None:
                        s, state = self.lm.score(src[6], prefix[-1])
                        lm += s
                    nxt[prefix] = [-math.inf, -math.inf, src[2] + (self.t,), src[3] + (math.exp(v),), v, lm, state]
                else:
                    nxt[prefix] = [-math.inf, -math.inf, src[2], src[3], src[4], src[5], src[6]]
            return nxt[prefix]

        lae = _logaddexp
        for prefix, b in self.beams.items():
            total = lae(b[0], b[1])
            for u, v in zip(units_, vals):
                if u == 0:
                    p = get(prefix, b, False, v)
                    p[0] = lae(p[0], total + v)
                elif prefix and u == prefix[-1]:
                    p = get(prefix, b, False, v)
                    p[1] = lae(p[1], b[1] + v)
                    if v > p[4]:
                        p[2], p[3], p[4] = p[2][:-1] + (self.t,), p[3][:-1] + (math.exp(v),), v
                    q = get(prefix + (u,), b, True, v)
                    q[1] = lae(q[1], b[0] + v)
                else:
                    q = get(prefix + (u,), b, True, v)
                    q[1] = lae(q[1], total + v)
        self.beams = dict(sorted(nxt.items(), key=self.rank, reverse=True)[: self.beam])

    def nbest(self):
        return [(p, b[2], b[3], self.rank((p, b))) for p, b in self.beams.items()]


def peaky_logp(frames: int, vocab: int, seed: int, blank_share: float = 0.7) -> torch.Tensor:
    """CTC-like posteriors: most frames blank with near certainty, the rest a few competing units."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(frames, vocab, generator=g) * 3
    blank = torch.rand(frames, generator=g) < blank_share
    x[blank, 0] += 25
    x[~blank, 0] += torch.rand(int((~blank).sum()), generator=g) * 8
    return torch.log_softmax(x, dim=-1)


def toy_lm(vocab: int, seed: int = 0, order: int = 3):
    rng = np.random.default_rng(seed)
    names = [f"u{i}" for i in range(vocab)]
    sents = [[names[int(i)] for i in rng.integers(1, vocab, rng.integers(1, 9))] for _ in range(400)]
    sents += [[names[1], names[2], names[3]]] * 40  # some strong contexts
    return NgramLM.from_table(estimate(NgramCounts.from_sentences(sents, order), vocab=names[1:], cutoffs=(1, 1, 2)),
                              names)


def as_tuples(nbest):
    return [(h.tokens, h.frames, h.confidences, h.score) for h in nbest]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("beam", [1, 3, 10])
@pytest.mark.parametrize("with_lm", [False, True])
def test_prefix_beam_equals_the_plain_search_bit_for_bit(seed, beam, with_lm):
    vocab = 12
    lp = peaky_logp(80, vocab, seed) if seed % 2 else random_logp(60, vocab, seed)
    lm = toy_lm(vocab, seed) if with_lm else None
    w, bonus = (0.8, 1.5) if with_lm else (0.0, 0.0)
    ref = ReferencePrefixBeam(beam, lm, w, bonus)
    ref.advance(lp)
    d = PrefixBeamDecoder(beam, lm=lm, lm_weight=w, lm_bonus=bonus)
    feed(d, lp, [16] * 3 if seed % 3 else [80])  # streamed in 640 ms chunks or whole
    assert as_tuples(d.nbest()) == ref.nbest()


def test_prefix_beam_with_a_negative_lm_weight_is_unpruned_and_exact():
    lm = toy_lm(9, 1)
    lp = peaky_logp(50, 9, 3)
    ref = ReferencePrefixBeam(6, lm, -0.3, 0.5)
    ref.advance(lp)
    d = PrefixBeamDecoder(6, lm=lm, lm_weight=-0.3, lm_bonus=0.5)
    d.advance(lp)
    assert as_tuples(d.nbest()) == ref.nbest()


def test_blank_frames_keep_repeats_apart_and_peak_frames():
    # a a . . . a b b . . c: two a's (a blank between), b peaking on its second frame, c last
    path = [(1, -0.3), (1, -0.1), (0, 0), (0, 0), (0, 0), (1, -0.05), (2, -0.4), (2, -0.02), (0, 0), (0, 0), (3, -0.2)]
    lp = torch.full((len(path), 6), -30.0)
    for t, (u, v) in enumerate(path):
        lp[t, u] = v
        lp[t, 0 if u else 4] = max(lp[t, 0 if u else 4], math.log1p(-math.exp(v)) if v else -30.0)
    lp = torch.log_softmax(lp, dim=-1)
    lm = toy_lm(6)
    for d in (PrefixBeamDecoder(4), PrefixBeamDecoder(4, lm=lm, lm_weight=0.1, lm_bonus=0.5)):
        feed(d, lp, [4, 4])
        best = d.best()
        assert best.tokens == (1, 1, 2, 3)
        assert best.frames == (1, 5, 7, 10)  # each unit at its most likely frame
        probs = lp.exp()
        assert best.confidences == pytest.approx([float(probs[f, u]) for f, u in zip(best.frames, best.tokens)])
    ref = ReferencePrefixBeam(4, lm, 0.1, 0.5)
    ref.advance(lp)
    assert as_tuples(d.nbest()) == ref.nbest()


def test_lm_max_score_bounds_every_unit():
    lm = toy_lm(10, 2)
    states = {lm.start, ()}
    for a in range(1, 10):
        states.add(lm.score(lm.start, a)[1])
        for b in range(1, 10):
            states.add(lm.score(lm.score(lm.start, a)[1], b)[1])
    for s in states:
        scores = [lm.score(s, u)[0] for u in range(lm.base)]
        assert lm.max_score(s) >= max(scores)
        assert lm.max_score(s) == pytest.approx(max(scores), abs=2.0)  # a useful bound, not just 0
