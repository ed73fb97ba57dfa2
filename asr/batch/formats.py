"""Output formats for transcripts: txt, json, jsonl, srt, vtt, tsv.

Pure functions from a `Transcript` to text. Subtitle cues split each segment at token
boundaries: after every sentence end (。？！ of a punctuated transcript) and into lines of
at most `max_chars` characters (Mandarin segments run up to 20 s, too long for one
subtitle), where it can after a comma; the cue times are the tokens' times.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from .results import Segment, Transcript

__all__ = ["FORMATS", "PER_FILE_FORMATS", "render", "cues", "Cue", "timestamp", "token_ends", "EXTENSIONS"]

FORMATS = ("txt", "json", "jsonl", "srt", "vtt", "tsv")
PER_FILE_FORMATS = ("txt", "json", "srt", "vtt", "tsv")  # jsonl: one file for all inputs
EXTENSIONS = {f: "." + f for f in FORMATS}
CUE_CHARS = 32
SENTENCE_END = "。？！"


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    text: str
    channel: int | None = None


def timestamp(seconds: float, sep: str = ",") -> str:
    """HH:MM:SS,mmm (SRT) or HH:MM:SS.mmm (VTT, sep='.')."""
    ms = max(0, round(seconds * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def token_ends(text: str, tokens) -> list[int]:
    """Offset in `text` just after each token. Token texts are the text without the
    spaces between words; a token the text does not show (a special unit) is given
    zero width."""
    pos, ends = 0, []
    for tok in tokens:
        p = pos
        for ch in tok.text:
            while p < len(text) and text[p] != ch and text[p].isspace():
                p += 1
            if p >= len(text) or text[p] != ch:
                p = -1
                break
            p += 1
        if p >= 0:
            pos = p
        ends.append(pos)
    return ends


def _segment_cues(seg: Segment, max_chars: int) -> list[Cue]:
    if not seg.text:
        return []
    inner_end = any(c in SENTENCE_END for c in seg.text.rstrip(SENTENCE_END + " "))
    ends = token_ends(seg.text, seg.tokens) if len(seg.text) > max_chars or inner_end else None
    if ends is None:
        return [Cue(seg.start, seg.end, seg.text, seg.channel)]
    cuts = [0]  # token index where each cue starts
    text_from = 0
    comma = -1  # the last token of the current cue that ends with a comma
    for i, e in enumerate(ends):
        if i > cuts[-1] and seg.tokens[i - 1].text[-1:] in SENTENCE_END:
            cuts.append(i)
            text_from, comma = ends[i - 1], -1
        elif e - text_from > max_chars and i > cuts[-1]:
            cut = comma + 1 if comma >= cuts[-1] else i  # break after a comma where the line has one
            cuts.append(cut)
            text_from, comma = ends[cut - 1], -1
        if seg.tokens[i].text[-1:] in "，、；":
            comma = i
    out = []
    for k, first in enumerate(cuts):
        last = (cuts[k + 1] if k + 1 < len(cuts) else len(seg.tokens)) - 1
        a = 0 if first == 0 else ends[first - 1]
        b = ends[last] if k + 1 < len(cuts) else len(seg.text)
        start = seg.start if k == 0 else seg.tokens[first].start
        end = seg.end if k + 1 == len(cuts) else seg.tokens[last + 1].start
        text = seg.text[a:b].strip()
        if text:
            out.append(Cue(start, max(end, start + 0.001), text, seg.channel))
    return out


def cues(transcript: Transcript, max_chars: int = CUE_CHARS) -> list[Cue]:
    """Subtitle cues of a transcript, in time order."""
    out = [c for seg in transcript.segments for c in _segment_cues(seg, max_chars)]
    return sorted(out, key=lambda c: (c.start, c.channel or 0))


def _label(c: Cue) -> str:
    return f"[{c.channel}] " if c.channel is not None else ""


def render(transcript: Transcript, fmt: str, max_chars: int = CUE_CHARS) -> str:
    """The text of `transcript` in format `fmt` (json and jsonl: one JSON object)."""
    if fmt in ("json", "jsonl"):
        return json.dumps(transcript.to_dict(), ensure_ascii=False) + "\n"
    if fmt == "txt":
        if transcript.channels > 1:
            return "".join(f"[{c}] {transcript.channel_text(c)}\n" for c in range(transcript.channels))
        return "".join(s.text + "\n" for s in transcript.segments if s.text)
    if fmt == "tsv":
        lines = ["start\tend\tchannel\tconfidence\ttext"]
        for s in transcript.segments:
            ch = "" if s.channel is None else str(s.channel)
            text = s.text.replace("\t", " ").replace("\n", " ")
            lines.append(f"{s.start:.3f}\t{s.end:.3f}\t{ch}\t{s.confidence:.4f}\t{text}")
        return "\n".join(lines) + "\n"
    if fmt == "srt":
        blocks = [
            f"{i}\n{timestamp(c.start)} --> {timestamp(c.end)}\n{_label(c)}{c.text}\n"
            for i, c in enumerate(cues(transcript, max_chars), 1)
        ]
        return "\n".join(blocks)
    if fmt == "vtt":
        blocks = ["WEBVTT\n"]
        for c in cues(transcript, max_chars):
            voice = f"<v ch{c.channel}>" if c.channel is not None else ""
            blocks.append(f"{timestamp(c.start, '.')} --> {timestamp(c.end, '.')}\n{voice}{c.text}\n")
        return "\n".join(blocks)
    raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
