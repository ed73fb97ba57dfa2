import itertools
import math

import numpy as np
import pytest
import torch

from asr.decoding import GreedyDecoder, PrefixBeamDecoder


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
