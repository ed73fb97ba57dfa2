"""Inverse text normalisation: spoken-form Mandarin numbers as people write them.

A recogniser emits what was said (一三八零零一三八零零零, 三千五百元, 百分之五); `itn`
finds the spans that are numbers of a kind a reader expects in digits and rewrites only
those: phone, ID and order numbers (13800138000), amounts and currencies (3500元,
2.5元), percentages (5%), fractions (1/3), dates (2024年3月5日), clock times (10:30,
3点半), decimals, and cardinals of two digits or more (25个, 3500万). Idioms and fixed
words with number characters stay (一心一意, 一下, 十分, 千万, 三五个): a span is
rewritten only when its shape or the word after it says it is a number.

`spans(text)` returns the rewrites as (start, end, replacement) so that callers can map
them onto tokens (`asr.text.format`); `itn(text)` applies them.

cn2an computes the value of a cardinal (it takes the spoken shortenings 三千五 = 3500,
两万五 = 25000); deciding *which* characters form a number is done here, since
`cn2an.transform` rewrites every numeral (一心一意 becomes 1心1意).
"""

from __future__ import annotations

import re
from typing import Callable

import cn2an

__all__ = ["itn", "spans", "Rewrite"]

Rewrite = tuple[int, int, str]

_D = "零〇一二三四五六七八九幺"  # digits as read one by one (幺: 1 in numbers read digit by digit)
_DIGIT_VALUE = {c: str(i) for i, c in enumerate("零一二三四五六七八九")} | {"〇": "0", "幺": "1"}
_NUM = "零〇一二两三四五六七八九十百千万亿"  # characters of a cardinal
_CARD = f"[{_NUM}]+"
_DEC = f"[{_NUM}]+(?:点[{_D}]+)?"

# Units after which even a single digit is written as a figure (5公斤, 3号).
_UNITS_ANY = (
    "千克|公斤|斤|克|毫克|吨|公里|千米|米|厘米|毫米|平方米|平米|立方米|升|毫升|岁|周岁|号|楼|层|室|"
    "分钟|小时|秒钟|秒|G|GB|M|MB|兆|年级|倍|折|度|摄氏度|瓦|伏|赫兹|元|块钱|块|角|毛|美元|欧元|"
    "英镑|日元|港币|港元|韩元|人民币"
)
_CURRENCY = "元|块钱|块|美元|欧元|英镑|日元|港币|港元|韩元"
# Words before a digit string that make it an identifier even when short (尾号三七).
_ID_WORDS = (
    "号码|电话|手机|手机号|尾号|卡号|账号|帐号|单号|编号|工号|验证码|密码|邮编|房间|房号|门牌|分机|"
    "车次|航班|车牌|身份证|证件|会员号|客户号|合同号|保单号|工单号|订单|运单|快递单|流水号|型号|批号|热线|拨打"
)
_TIME_WORDS = "凌晨|早上|早晨|上午|中午|下午|傍晚|晚上|夜里|半夜|今天|明天|后天|昨天|今晚|明早|每天|早|晚"


def _digits(s: str) -> str:
    return "".join(_DIGIT_VALUE[c] for c in s)


def _cardinal_ok(s: str) -> bool:
    """A well-formed cardinal: no two digits side by side (五六十 is 'fifty or sixty'),
    and it starts with a digit or 十 (千万, 百姓, 万一 are words)."""
    if not s or s[0] not in "一二两三四五六七八九十零":
        return False
    if s[0] == "零" and len(s) > 1:
        return False
    prev_digit = False
    for c in s:
        d = c in "一二两三四五六七八九"
        if d and prev_digit:
            return False
        prev_digit = d
    return True


def _value(s: str) -> str | None:
    """The figure for a cardinal or decimal (三千五 -> 3500, 三点五 -> 3.5), or None."""
    whole, _, frac = s.partition("点")
    if not _cardinal_ok(whole):
        return None
    try:
        v = cn2an.cn2an(whole.replace("〇", "零"), "normal")
    except (ValueError, KeyError):
        return None
    out = str(int(v))
    return out + "." + _digits(frac) if frac else out


def _large(s: str) -> str | None:
    """Cardinals ending in 万 or 亿 keep the word, as written Chinese does (3500万, 1.2亿)."""
    if len(s) >= 2 and s[-1] in "万亿" and s[-2] not in "万亿":
        head = _value(s[:-1])
        if head is not None and "万" not in s[:-1] and "亿" not in s[:-1]:
            return head + s[-1]
        if s[-1] == "亿" and "万" in s[:-1]:
            return None
    return _value(s)


class _Finder:
    """Collects non-overlapping rewrites; earlier rules win."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.taken = [False] * len(text)
        self.out: list[Rewrite] = []

    def free(self, a: int, b: int) -> bool:
        return not any(self.taken[a:b])

    def add(self, a: int, b: int, rep: str) -> None:
        if a < b and self.free(a, b) and rep != self.text[a:b]:
            self.out.append((a, b, rep))
            for i in range(a, b):
                self.taken[i] = True

    def rule(self, pattern: str, fn: Callable[[re.Match], list[Rewrite] | None]) -> None:
        for m in re.finditer(pattern, self.text):
            if not self.free(m.start(), m.end()):
                continue
            for a, b, rep in fn(m) or ():
                self.add(a, b, rep)


def _hour(s: str) -> str | None:
    v = _value(s)
    return v if v is not None and "." not in v and int(v) <= 24 else None


def _minute(s: str) -> str | None:
    if s.startswith("零") and len(s) == 2:
        s = s[1:]
    v = _value(s)
    return f"{int(v):02d}" if v is not None and "." not in v and int(v) <= 59 else None


def spans(text: str) -> list[Rewrite]:
    """The rewrites ITN makes in `text`, as (start, end, replacement), sorted."""
    f = _Finder(text)
    not_num_before = f"(?<![{_NUM}点几])"

    # percentages and per-mille: 百分之五十 -> 50%, 百分之三点五 -> 3.5%, 百分之百 -> 100%
    def pct(m: re.Match):
        v = "100" if m.group(2) == "百" else _value(m.group(2))
        return [(m.start(), m.end(), v + ("%" if m.group(1) == "百" else "‰"))] if v else None

    f.rule(f"([百千])分之({_DEC})", pct)

    # fractions: 三分之一 -> 1/3 (not 十分 "very")
    def frac(m: re.Match):
        a, b = _value(m.group(1)), _value(m.group(2))
        return [(m.start(), m.end(), f"{b}/{a}")] if a and b and "." not in a else None

    f.rule(f"{not_num_before}({_CARD})分之({_DEC})", frac)

    # clock times: 十点十分 -> 10:10, 两点零五分三十秒 -> 2:05:30; 三点半 -> 3点半
    def clock(m: re.Match):
        h, mi, s = _hour(m.group(1)), _minute(m.group(2)), m.group(3)
        if h is None or mi is None:
            return None
        out = f"{h}:{mi}"
        if s:
            sv = _minute(s)
            if sv is None:
                return None
            out += f":{sv}"
        return [(m.start(), m.end(), out)]

    f.rule(f"{not_num_before}({_CARD})点(零?[{_NUM}]+)分(?:钟)?(?:({_CARD})秒)?", clock)

    # after a time word, 下午三点四十 -> 下午3:40
    def time_hm(m: re.Match):
        h, mi = _hour(m.group(1)), _minute(m.group(2))
        if h is None or mi is None or len(m.group(2)) < 2:
            return None
        return [(m.start(1), m.end(), f"{h}:{mi}")]

    f.rule(f"(?:{_TIME_WORDS})({_CARD})点(零?[{_NUM}]+)(?![{_NUM}分秒])", time_hm)

    def hour_word(m: re.Match):
        h = _hour(m.group(1))
        return [(m.start(1), m.end(1), h)] if h is not None else None

    f.rule(f"{not_num_before}({_CARD})(?=点(?:半|钟|整|左右|多|前|后|以前|以后|之前|之后))", hour_word)
    f.rule(f"(?:{_TIME_WORDS})({_CARD})(?=点)", hour_word)
    f.rule(f"{not_num_before}({_CARD})(?=点(?:到|至)[{_NUM}]+点)", hour_word)

    # dates: 二零二四年三月五日 -> 2024年3月5日; 九八年十月 -> 98年10月
    def year(m: re.Match):
        return [(m.start(1), m.end(1), _digits(m.group(1)))]

    f.rule(f"(?<![{_NUM}])([{_D}]{{4}})(?=年)", year)
    f.rule(f"(?<![{_NUM}])([{_D}]{{2}})(?=年[{_NUM}]+月)", year)

    def month(m: re.Match):
        v = _value(m.group(1))
        out = [(m.start(1), m.end(1), v)] if v and "." not in v and 1 <= int(v) <= 12 else []
        if out and m.group(2):
            d = _value(m.group(2))
            if d and "." not in d and 1 <= int(d) <= 31:
                out.append((m.start(2), m.end(2), d))
        return out

    f.rule(f"(?<![{_NUM}个])(十[一二]|[一二三四五六七八九十])月(?:({_CARD})[日号])?", month)

    # money with a spoken fraction: 两块五 -> 2.5元, 三元五角 -> 3.5元
    def money_frac(m: re.Match):
        whole, tenth = _value(m.group(1)), _digits(m.group(3)) if m.group(3) in _D else None
        if whole is None or "." in whole or tenth is None:
            return None
        return [(m.start(), m.end(), f"{whole}.{tenth}元")]

    f.rule(f"{not_num_before}({_CARD})(块|元)([一二三四五六七八九])(?:毛|角)?(?![{_NUM}分钱])", money_frac)

    # negative numbers: 负五 -> -5 (零下 stays a word: 零下5度)
    def negative(m: re.Match):
        v = _value(m.group(1))
        return [(m.start(), m.end(), "-" + v)] if v else None

    f.rule(f"负({_DEC})", negative)

    # identifiers read digit by digit: phone, order, card numbers (幺 is 1)
    def ident(m: re.Match):
        s = m.group(2)
        keyed = bool(m.group(1))
        if len(s) >= 4 or (len(s) == 3 and (keyed or re.search("[幺零〇]", s))) or (keyed and len(s) >= 2):
            return [(m.start(2), m.end(2), _digits(s))]
        return None

    f.rule(f"((?:{_ID_WORDS})(?:是|为|码|号|号码)?)?(?<![{_NUM}点])([{_D}]+)(?![{_NUM}])", ident)

    # ordinals and cardinals of two digits or more (二十五, 三千五百万); decimals (三点五)
    def cardinal(m: re.Match):
        s, after = m.group(1), text[m.end():m.end() + 4]
        if "点" in s:
            if text[m.end():m.end() + 1] == "点":  # 一点一点: a way of speaking, not 1.1
                return None
            v = _value(s)
            return [(m.start(1), m.end(1), v)] if v else None
        if after[:1] in ("几", "来") or (s == "十" and not re.match(_UNITS_ANY, after)):
            return None  # 十几个, 十分 (very), 十全十美
        magnitude = any(c in s for c in "十百千万亿")
        if not magnitude:
            # a single digit stays a word unless a unit follows (5公斤); 一 and 两 stay
            # words even then (一斤, 两小时), as they are written
            if len(s) == 1 and re.match(_UNITS_ANY, after) and s not in "零一两":
                v = _value(s)
                return [(m.start(1), m.end(1), v)] if v else None
            return None
        if s[0] in "万亿千百":
            return None
        v = _large(s)
        return [(m.start(1), m.end(1), v)] if v else None

    f.rule(f"{not_num_before}({_CARD}(?:点[{_D}]+)?)", cardinal)
    return sorted(f.out)


def itn(text: str) -> str:
    """`text` with its spoken numbers written as figures."""
    out, pos = [], 0
    for a, b, rep in spans(text):
        out.append(text[pos:a])
        out.append(rep)
        pos = b
    out.append(text[pos:])
    return "".join(out)
