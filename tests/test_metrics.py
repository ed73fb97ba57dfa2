from asr.metrics import ErrorCounts, cer, edit_distance, score_units


def test_score_units_split_han_and_words_and_drop_punctuation():
    assert score_units("你好，world! 我用 iPhone。") == ["你", "好", "WORLD", "我", "用", "IPHONE"]


def test_edit_distance_counts_each_kind():
    assert edit_distance(list("abcd"), list("abxd")) == (1, 0, 0)
    assert edit_distance(list("abcd"), list("abd")) == (0, 1, 0)
    assert edit_distance(list("abd"), list("abcd")) == (0, 0, 1)
    assert edit_distance([], list("ab")) == (0, 0, 2)


def test_cer_over_corpus():
    assert cer(["今天天气很好", "你好"], ["今天天气很好", "你好"]) == 0.0
    assert abs(cer(["今天天气很好"], ["今天天汽很"]) - 2 / 6) < 1e-9
    c = ErrorCounts()
    c.add("HELLO 世界", "hello 世界")
    assert c.cer == 0.0 and c.ref_units == 3
