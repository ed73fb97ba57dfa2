"""Hotwords: the context graph, its effect on the prefix beam search, and parsing."""

from __future__ import annotations

import numpy as np
import pytest

from asr.decoding import PrefixBeamDecoder, make_decoder
from asr.decoding.context import ContextGraph, HotwordError, HotwordLimits, parse_hotwords, prompt_hotwords
from asr.tokens import Tokenizer


def test_graph_rewards_each_unit_keeps_completed_phrases_and_takes_back_broken_ones():
    g = ContextGraph([([1, 2, 3], 2.0), ([2, 4], 1.0)])
    s1, d1 = g.step(0, 1)
    s2, d2 = g.step(s1, 2)
    assert (d1, d2) == (2.0, 2.0)
    done, d3 = g.step(s2, 3)
    assert (done, d3) == (0, 2.0)  # complete: back to the root, the bonus kept
    assert g.final_penalty(done) == 0.0
    assert g.final_penalty(s2) == -4.0  # an utterance ending inside a match gives it back
    # 1 2 then 4: the match of [1 2 3] breaks; the suffix 2 continues as [2 4], which completes
    s_fail, d_fail = g.step(s2, 4)
    assert s_fail == 0 and d_fail == pytest.approx(2.0 - 4.0)
    # a unit outside every phrase from the root costs nothing
    assert g.step(0, 9) == (0, 0.0)
    assert g.max_step == 2.0


def _logp(rows: list[dict[int, float]], vocab: int = 6) -> np.ndarray:
    """Frames of log-probs: the given units' probabilities, the rest spread."""
    out = np.full((len(rows), vocab), np.log(1e-4), dtype=np.float32)
    for t, row in enumerate(rows):
        for u, p in row.items():
            out[t, u] = np.log(p)
    return out


# blank 0; frames say "1 then 2 or 3 (3 a little likelier) then 4"
FRAMES = _logp([{1: 0.9, 0: 0.1}, {0: 0.9}, {3: 0.5, 2: 0.4, 0: 0.1}, {0: 0.9}, {4: 0.9, 0: 0.1}, {0: 0.9}])


def _best(context=None) -> tuple[int, ...]:
    d = PrefixBeamDecoder(beam_size=4, context=context)
    d.advance(FRAMES)
    return d.best().tokens


def test_hotword_changes_the_search_result():
    assert _best() == (1, 3, 4)
    assert _best(ContextGraph([([1, 2, 4], 1.0)])) == (1, 2, 4)
    # a phrase the audio does not support changes nothing
    assert _best(ContextGraph([([5, 5, 5], 3.0)])) == (1, 3, 4)


def test_unfinished_match_gives_its_bonus_back_in_the_nbest():
    d = PrefixBeamDecoder(beam_size=4, context=ContextGraph([([1, 3, 5], 2.0)]))
    d.advance(FRAMES)
    plain = PrefixBeamDecoder(beam_size=4)
    plain.advance(FRAMES)
    # 1 3 4 matched [1 3] and broke off at 4: its score is what it is without hotwords
    assert d.best().tokens == plain.best().tokens == (1, 3, 4)
    assert d.best().score == pytest.approx(plain.best().score, abs=1e-3)  # not +4: the bonus is gone


def test_greedy_search_gives_way_to_the_beam_for_hotwords():
    assert type(make_decoder("greedy")).__name__ == "GreedyDecoder"
    assert isinstance(make_decoder("greedy", context=ContextGraph([([1], 1.0)])), PrefixBeamDecoder)


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer(["<blank>", "<unk>", *"阿里巴达摩院小米手机", "<sos/eos>"])


def test_parse_hotwords_forms(tok):
    as_list = parse_hotwords(["阿里巴巴", {"phrase": "达摩院", "boost": 3}], tok)
    assert as_list == [(tok.encode("阿里巴巴"), 2.0), (tok.encode("达摩院"), 3.0)]
    assert parse_hotwords({"小米手机": 1.5}, tok) == [(tok.encode("小米手机"), 1.5)]
    assert parse_hotwords("阿里巴巴 4\n达摩院\n", tok) == [(tok.encode("阿里巴巴"), 4.0), (tok.encode("达摩院"), 2.0)]


@pytest.mark.parametrize("value,message", [
    (42, "must be a list"),
    ([1], "each hotword must be"),
    ([""], "non-empty"),
    ([{"phrase": "阿里", "boost": 99}], "from 0 to 10"),
    ([{"phrase": "阿里", "boost": True}], "from 0 to 10"),
    (["阿里云"], "cannot recognise"),
    (["阿里"] * 3, "too many hotwords: 3"),
    (["阿里巴巴达摩院"], "too long: 7 units"),
])
def test_parse_hotwords_errors(tok, value, message):
    with pytest.raises(HotwordError, match=message):
        parse_hotwords(value, tok, HotwordLimits(max_phrases=2, max_units=6))


def test_prompt_hotwords_keep_what_the_model_can_spell(tok):
    got = prompt_hotwords("阿里巴巴，达摩院 and 小米手机。云", tok)
    assert got == [(tok.encode("阿里巴巴"), 2.0), (tok.encode("达摩院"), 2.0), (tok.encode("小米手机"), 2.0)]
