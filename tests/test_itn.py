"""Inverse text normalisation: the hand-written case table and token alignment."""

from __future__ import annotations

from pathlib import Path

import pytest

from asr.text.itn import itn, spans

CASES = Path(__file__).parent / "data" / "itn_cases.tsv"


def _cases() -> list[tuple[str, str]]:
    out = []
    for line in CASES.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        spoken, written = line.split("\t")
        out.append((spoken, spoken if written == "=" else written))
    return out


def test_table_is_large_and_has_must_not_change_cases():
    cases = _cases()
    assert len(cases) >= 200
    assert sum(s == w for s, w in cases) >= 60
    assert len({s for s, _ in cases}) == len(cases), "duplicate cases"


@pytest.mark.parametrize("spoken,written", _cases(), ids=[s for s, _ in _cases()])
def test_itn_case(spoken, written):
    assert itn(spoken) == written


def test_spans_do_not_overlap_and_cover_what_changed():
    text = "我的手机号是一三八零零一三八零零零那个订单三千五百元十分感谢"
    rewrites = spans(text)
    assert [text[a:b] for a, b, _ in rewrites] == ["一三八零零一三八零零零", "三千五百"]
    assert all(b1 <= a2 for (_, b1, _), (a2, _, _) in zip(rewrites, rewrites[1:]))


def test_text_without_numbers_is_untouched():
    assert itn("") == ""
    assert itn("您好请问有什么可以帮您") == "您好请问有什么可以帮您"
    assert itn("打开WIFI设置") == "打开WIFI设置"
