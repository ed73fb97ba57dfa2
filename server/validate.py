"""Strict field validation shared by every protocol parser (native, WeNet, FunASR, Vosk,
Twilio, FreeSWITCH, query strings).

Clients send numbers as JSON numbers or as strings ("16000" in a query string or a
Twilio counter). Python's `int()` and `str.isdigit()` accept far more than that (Unicode
digits such as "²" or "①", 5,000-digit strings, floats like 1e308 or infinity), so each
value goes through one of these functions, which accept only what the protocols
document and raise `FieldError` (a `ValueError`) with a message meant for the client.
The adapters map that error to their own documented reply.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Collection

__all__ = ["FieldError", "integer", "choice", "text", "boolean", "json_depth", "loads", "MAX_DEPTH", "MAX_DIGITS"]

MAX_DIGITS = 12  # no field of any protocol needs more (sample rates, counters, ms timestamps)
MAX_DEPTH = 32  # nesting of JSON documents read from clients
MAX_SHOWN = 40  # characters of a bad value quoted back in an error message
_SURROGATE = re.compile(r"\\u[dD][89a-fA-F]")


class FieldError(ValueError):
    """A field's value is not acceptable; the message names the field and says why."""


def shown(value: Any) -> str:
    """A bad value quoted for an error message: JSON, at most MAX_SHOWN characters."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        text = type(value).__name__
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 1] + "…"


def integer(name: str, value: Any, lo: int | None = None, hi: int | None = None, strings: bool = True) -> int:
    """An integer given as a JSON integer, an integral finite float, or (strings=True) a
    string of at most MAX_DIGITS ASCII digits (surrounding spaces ignored); within
    [lo, hi] when given."""
    out: int | None = None
    if isinstance(value, bool):
        out = None
    elif isinstance(value, int):
        out = value
    elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
        out = int(value)
    elif strings and isinstance(value, str):
        t = value.strip()
        if 0 < len(t) <= MAX_DIGITS and t.isascii() and t.isdigit():
            out = int(t)
    if out is None or abs(out) >= 10**MAX_DIGITS:
        raise FieldError(f"{name} must be an integer, got {shown(value)}")
    if (lo is not None and out < lo) or (hi is not None and out > hi):
        bounds = f"{lo} to {hi}" if lo is not None and hi is not None else (f">= {lo}" if lo is not None else f"<= {hi}")
        raise FieldError(f"{name} must be {bounds}, got {shown(value)}")
    return out


def choice(name: str, value: Any, choices: Collection[str]) -> str:
    """One of `choices` (strings only: lists and objects are refused, never hashed)."""
    if not isinstance(value, str) or value not in choices:
        raise FieldError(f"{name} must be one of {', '.join(choices)}, got {shown(value)}")
    return value


def text(name: str, value: Any, max_len: int, numbers: bool = False) -> str:
    """A string of at most `max_len` characters (numbers=True: JSON numbers are taken as
    their decimal text, as some clients send ids as numbers)."""
    if numbers and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise FieldError(f"{name} must be a string, got {shown(value)}")
    if len(value) > max_len:
        raise FieldError(f"{name} is longer than {max_len} characters")
    return value


def boolean(name: str, value: Any) -> bool:
    """A JSON boolean (0 and 1 are accepted, as some clients send them)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise FieldError(f"{name} must be true or false, got {shown(value)}")


def json_depth(doc: str) -> int:
    """Deepest nesting of arrays and objects in a JSON text (strings skipped), without
    parsing it: checked before `json.loads`, whose recursion a deep document exhausts."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in doc:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def loads(doc: str | bytes, max_depth: int = MAX_DEPTH) -> Any:
    """`json.loads` for client input: FieldError for invalid UTF-8, invalid JSON, NaN and
    Infinity (not JSON), or nesting deeper than `max_depth`."""
    if isinstance(doc, (bytes, bytearray)):
        try:
            doc = bytes(doc).decode("utf-8")
        except UnicodeDecodeError:
            raise FieldError("text messages must be valid UTF-8") from None
    if doc.count("[") + doc.count("{") > max_depth and json_depth(doc) > max_depth:
        raise FieldError(f"JSON nested deeper than {max_depth} levels")
    try:
        obj = json.loads(doc, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise FieldError("not valid JSON") from None
    if _SURROGATE.search(doc):
        # "\ud800" alone decodes to a string no UTF-8 encoder accepts: every later echo of
        # it (error messages, call events) would fail. Pairs (emoji) are fine.
        try:
            json.dumps(obj, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise FieldError("not valid JSON: a string holds an unpaired surrogate escape") from None
    return obj


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
