"""Text normalisation for Mandarin ASR transcripts.

``normalize_text`` turns written Chinese text into the form a speaker would
say it, which is also the form stored in the training manifests:

* NFKC (full-width digits/letters become ASCII, compatibility forms unfold);
* numbers become Chinese characters: years and phone/account/card/order
  numbers are read digit by digit (``1`` as 幺 in phone-style numbers, as 一 in
  years), dates become 年/月/日, times become 点/分/秒, percentages become
  百分之…, temperatures 摄氏度, fractions …分之…, ranges 到, ratios 比,
  everything else is read as a cardinal number (cn2an), with 两 where people
  say it (两个, 两点, 两千);
* Latin words are upper-cased and kept as words; consecutive Latin words are
  separated by exactly one space, and there is no space between Latin and Han
  characters (``请打开APP``, ``CHECK IN``);
* punctuation, spaces between Han characters and any character that cannot be
  spoken are removed.

The result contains only Han characters (U+3400-U+4DBF, U+4E00-U+9FFF),
``A-Z``, apostrophes inside Latin words and single spaces between Latin words.
"""

from __future__ import annotations

import re
import unicodedata

import cn2an

__all__ = ["normalize_text", "read_digits", "read_number", "is_han"]

_DIGIT_YI = "零一二三四五六七八九"
_DIGIT_YAO = "零幺二三四五六七八九"

# Measure words after which a bare "2" is said 两 rather than 二.
_LIANG_MEASURES = (
    "个位台次天年点岁本件张条只家名种项份斤公里米小时周杯瓶块辆层间对双套副部句"
    "门所座棵头匹枚颗根把支盒包袋箱桶碗盘顿场轮届批群口架艘节段篇首幅栋"
    "晚夜遍趟下声圈期笔单"
)

# Words after which a digit string is an identifier read digit by digit.
_ID_KEYWORDS = (
    "电话号码|手机号码|电话号|手机号|联系电话|服务热线|客服热线|热线电话|热线|电话|手机|"
    "拨打|致电|回拨|呼叫|传真|分机号?|座机|"
    "尾号|卡号|账号|帐号|账户号?|帐户号?|单号|订单号?|运单号|快递单号|流水号|编号|工号|"
    "验证码|密码|邮编|邮政编码|房间号?|房号|门牌号?|身份证号码?|证件号码?|车牌号?|"
    "QQ号?|微信号|会员号|客户号|合同号|保单号|工单号|序列号|型号|批号|航班号?|车次"
)
_ID_RE = re.compile(
    r"(" + _ID_KEYWORDS + r")((?:是|为|码|号码)?\s*[:：]?\s*)"
    r"([A-Za-z]{0,3}\d[\d\- ]+\d)"
    r"(?![\d.%]|\s*[元块个台部次点分秒万亿年月日天岁])"
)

# Service numbers that are always read digit by digit when they stand alone.
_HOTLINES = (
    "10086|10010|10000|10001|95588|95533|95555|95566|95599|95559|95528|95595|"
    "95568|95508|95561|95577|95558|95501|95511|95518|95522|95567|12306|12315|"
    "12345|12348|12365|12366|12369|12333|12319|12580"
)

_HAN_RANGES = (("\u3400", "\u4dbf"), ("\u4e00", "\u9fff"))


def is_han(ch: str) -> bool:
    return any(lo <= ch <= hi for lo, hi in _HAN_RANGES)


def read_digits(digits: str, yao: bool = True) -> str:
    """Read a digit string digit by digit (幺 for 1 when ``yao``)."""
    table = _DIGIT_YAO if yao else _DIGIT_YI
    return "".join(table[int(d)] for d in digits if d.isdigit())


def read_number(num: str) -> str:
    """Read a (possibly signed, possibly decimal) number as a cardinal."""
    num = num.replace(",", "")
    neg = num.startswith("-")
    if neg:
        num = num[1:]
    if "." in num:
        ip, fp = num.split(".", 1)
        ip = ip or "0"
        out = _int_reading(ip) + "点" + read_digits(fp, yao=False)
    else:
        out = _int_reading(num)
    return ("负" if neg else "") + out


def _int_reading(s: str) -> str:
    s = s.lstrip("0") or "0"
    if len(s) > 16:  # beyond 亿亿: nobody says that, read digits
        return read_digits(s, yao=False)
    out = cn2an.an2cn(s, "low")
    # 两千 / 两万 / 两亿 at the start of a number is what people say.
    if len(out) >= 2 and out[0] == "二" and out[1] in "千万亿":
        out = "两" + out[1:]
    return out


def _sub_id(m: re.Match) -> str:
    key, sep, val = m.group(1), m.group(2), m.group(3)
    letters = re.match(r"[A-Za-z]*", val).group(0)
    digits = val[len(letters):]
    return key + re.sub(r"[：:\s]", "", sep) + letters + read_digits(digits, yao=True)


def _valid_date(y: int | None, mo: int, d: int | None) -> bool:
    return 1 <= mo <= 12 and (d is None or 1 <= d <= 31)


def _sub_ymd(m: re.Match) -> str:
    y, mo, d = m.group(1), int(m.group(2)), int(m.group(3))
    if not _valid_date(int(y), mo, d):
        return m.group(0)
    return read_digits(y, yao=False) + "年" + _int_reading(str(mo)) + "月" + _int_reading(str(d)) + "日"


def _sub_time(m: re.Match) -> str:
    h, mi, s = int(m.group(1)), int(m.group(2)), m.group(3)
    if h > 24 or mi > 59 or (s is not None and int(s) > 59):
        return m.group(0)
    out = ("两" if h == 2 else _int_reading(str(h))) + "点"
    if mi or s is not None:
        out += ("零" if mi < 10 else "") + _int_reading(str(mi)) + "分"
    if s is not None and int(s):
        out += _int_reading(str(int(s))) + "秒"
    return out


def _sub_percent(m: re.Match) -> str:
    lo, hi, sign = m.group(1), m.group(2), m.group(3)
    word = "百分之" if sign == "%" else "千分之"
    if hi is not None:
        return word + read_number(lo) + "到" + word + read_number(hi)
    return word + read_number(lo)


def _sub_temperature(m: re.Match) -> str:
    sign, num = m.group(1), m.group(2)
    return ("零下" if sign else "") + read_number(num) + "摄氏度"


def _sub_plain_number(m: re.Match) -> str:
    num = m.group(0)
    digits = num.replace(",", "").replace("-", "")
    if "." not in num:
        # identifiers: long digit strings and strings with a leading zero
        if len(digits) >= 11 or (len(digits) >= 2 and digits[0] == "0"):
            return read_digits(digits, yao=True)
    return read_number(num)


def _pre_map(s: str) -> str:
    s = unicodedata.normalize("NFKC", s)
    table = {
        "∶": ":", "：": ":", "〇": "零", "－": "-", "—": "—", "～": "~",
        "﹪": "%", "％": "%", "￥": "¥", "°C": "℃", "（": "(", "）": ")",
    }
    for a, b in table.items():
        s = s.replace(a, b)
    s = s.replace("°C", "℃").replace("° C", "℃")
    # thousands separators: 1,234,567
    s = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", s)
    return s


def normalize_text(s: str) -> str:
    """Normalise written Chinese into spoken-form transcript text."""
    s = _pre_map(s)

    # --- identifiers read digit by digit -------------------------------------
    s = _ID_RE.sub(_sub_id, s)
    # mobile numbers, optionally written 138-1234-5678 / 138 1234 5678 / +86
    s = re.sub(
        r"(?<!\d)(?:\+?86[\- ]?)?(1[3-9]\d)[\- ]?(\d{4})[\- ]?(\d{4})(?!\d)",
        lambda m: read_digits("".join(m.groups())), s)
    # landlines 010-12345678, 0755-8888 6666, 400-123-4567, 800-...
    s = re.sub(r"(?<!\d)(0\d{2,3})-(\d{3,4})[\- ]?(\d{4})(?!\d)",
               lambda m: read_digits("".join(m.groups())), s)
    s = re.sub(r"(?<!\d)(0\d{2,3})-(\d{7,8})(?!\d)",
               lambda m: read_digits("".join(m.groups())), s)
    s = re.sub(r"(?<!\d)([48]00)-?(\d{3})-?(\d{4})(?!\d)",
               lambda m: read_digits("".join(m.groups())), s)
    s = re.sub(r"(?<![\d.])(" + _HOTLINES + r")(?![\d.%])",
               lambda m: read_digits(m.group(1)), s)
    s = re.sub(r"(打|拨|拨打|报警|呼叫|急救)(110|119|120|122|114)(?!\d)",
               lambda m: m.group(1) + read_digits(m.group(2)), s)

    # --- dates and times --------------------------------------------------------
    s = re.sub(r"(?<!\d)(\d{4})[\-/.](\d{1,2})[\-/.](\d{1,2})(?![\d.])", _sub_ymd, s)
    s = re.sub(r"(?<!\d)(1[5-9]\d\d|20\d\d)\s*[\-~至到]\s*(1[5-9]\d\d|20\d\d)年",
               lambda m: read_digits(m.group(1), yao=False) + "到"
               + read_digits(m.group(2), yao=False) + "年", s)
    s = re.sub(r"(?<!\d)(1[5-9]\d\d|20\d\d)年", lambda m: read_digits(m.group(1), yao=False) + "年", s)
    s = re.sub(r"(?<!\d)(\d{2})年(?=\d{1,2}月)",
               lambda m: read_digits(m.group(1), yao=False) + "年", s)
    s = re.sub(r"(?<!\d)(\d{1,2}):(\d{2})(?::(\d{2}))?(?!\d)", _sub_time, s)

    # --- percentages, temperatures, fractions, ratios, ranges -------------------
    s = re.sub(r"(\d+(?:\.\d+)?)(?:%?\s*[\-~至到]\s*(\d+(?:\.\d+)?))?\s*([%‰])", _sub_percent, s)
    s = re.sub(r"(-|零下)?\s*(\d+(?:\.\d+)?)\s*℃", _sub_temperature, s)
    s = re.sub(r"(\d+(?:\.\d+)?)\s*°", lambda m: read_number(m.group(1)) + "度", s)
    s = re.sub(r"(?<![\d/])(\d+)/(\d+)(?![\d/])",
               lambda m: read_number(m.group(2)) + "分之" + read_number(m.group(1)), s)
    s = re.sub(r"(?<=\d)\s*:\s*(?=\d)", "比", s)
    s = re.sub(r"(?<=\d)\s*[\-~]\s*(?=\d)", "到", s)
    s = re.sub(r"(?<![0-9A-Za-z.])-(?=\d)", "负", s)
    s = re.sub(r"(?<=\d)\s*[+＋]\s*(?=\d)", "加", s)
    s = re.sub(r"(?<=\d)\s*[×xX*]\s*(?=\d)", "乘", s)
    s = re.sub(r"(?<=\d)\s*=\s*(?=\d)", "等于", s)

    # --- currency ---------------------------------------------------------------
    s = re.sub(r"¥\s*(\d+(?:\.\d+)?)", lambda m: read_number(m.group(1)) + "元", s)
    s = re.sub(r"\$\s*(\d+(?:\.\d+)?)", lambda m: read_number(m.group(1)) + "美元", s)
    s = re.sub(r"(\d+(?:\.\d+)?)\s*(?:RMB|rmb)", lambda m: read_number(m.group(1)) + "元", s)

    # --- 两 before measure words ---------------------------------------------
    s = re.sub(r"(?<![\d.第])2(?=[" + _LIANG_MEASURES + r"])", "两", s)

    # --- remaining numbers --------------------------------------------------------
    s = re.sub(r"\d+(?:\.\d+)?", _sub_plain_number, s)

    # --- final character filter and spacing -------------------------------------
    return _clean(s)


def _clean(s: str) -> str:
    out: list[str] = []
    pending_space = False
    for ch in s:
        if is_han(ch):
            out.append(ch)
            pending_space = False
        elif "a" <= ch.lower() <= "z" and ch.isascii():
            if pending_space and out and _is_latin(out[-1]):
                out.append(" ")
            out.append(ch.upper())
            pending_space = False
        elif ch == "'" and out and _is_latin(out[-1]):
            out.append(ch)
        else:
            # any separator: a space only matters between two Latin words
            pending_space = True
    text = "".join(out)
    text = re.sub(r"'+(?=\s|$|[^A-Z])", "", text)  # dangling apostrophes
    return text.strip()


def _is_latin(ch: str) -> bool:
    return ch.isascii() and ch.isalpha()
