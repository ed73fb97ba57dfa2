"""Unit n-gram language model: Kneser-Ney estimation, ARPA files, fast scoring.

The acoustic model hears Mandarin syllables far better than it picks characters (on the
synthetic test its toneless-pinyin error was 9% against 31% CER): most errors
are homophones, which is what a language model over the model's own units resolves. The
LM is fused into CTC prefix beam search (`asr.decoding.ctc.PrefixBeamDecoder`).

Estimation is interpolated Kneser-Ney with one absolute discount per order
(D = n1 / (n1 + 2 n2)); lower orders use continuation counts, except for n-grams that
start with <s>. Count cut-offs prune the higher orders; the pruned mass goes to the
back-off weight, so every context's distribution still sums to one. Files are standard
ARPA (log10), optionally gzip-compressed, readable by KenLM, SRILM and sherpa tools.

ARPA is the interchange format; a model directory also holds the LM's tables in a compact
binary (`NgramLM.write_binary`): the sorted key, log-prob and back-off arrays of each
order, memory-mapped at start-up instead of parsed (tens of milliseconds instead of ten
seconds for 1.7M n-grams). The binary records the SHA-256 of the ARPA file it was built
from and of the unit table its keys index, and is refused if either differs.
"""

from __future__ import annotations

import collections
import gzip
import hashlib
import io
import json
import math
import mmap
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

__all__ = ["BOS", "EOS", "NgramCounts", "estimate", "write_arpa", "read_arpa", "NgramLM", "LMError", "is_binary",
           "units_sha256"]

BOS, EOS = "<s>", "</s>"
LN10 = math.log(10.0)
Gram = tuple[str, ...]


class LMError(ValueError):
    pass


@dataclass
class NgramCounts:
    order: int
    counts: list[collections.Counter]  # counts[k - 1]: k-gram -> raw count

    @classmethod
    def from_sentences(cls, sentences: Iterable[Sequence[str]], order: int) -> "NgramCounts":
        if order < 1:
            raise LMError("order must be >= 1")
        counts = [collections.Counter() for _ in range(order)]
        for sent in sentences:
            seq = (BOS, *sent, EOS)
            for k in range(1, order + 1):
                c = counts[k - 1]
                for i in range(1 if k == 1 else 0, len(seq) - k + 1):  # unigram <s> is not counted
                    c[seq[i : i + k]] += 1
        return cls(order, counts)


def _adjusted(counts: NgramCounts) -> list[dict[Gram, int]]:
    """KN counts: raw for the highest order and for n-grams starting with <s>, else the
    number of distinct units seen before the n-gram."""
    n = counts.order
    adj: list[dict[Gram, int]] = [dict() for _ in range(n)]
    adj[n - 1] = dict(counts.counts[n - 1])
    for k in range(n - 1, 0, -1):  # fill order k from order k + 1
        cont: collections.Counter = collections.Counter()
        for g in counts.counts[k]:
            cont[g[1:]] += 1
        a = adj[k - 1]
        for g, c in counts.counts[k - 1].items():
            # n-grams at the very start have no left context: their raw count
            a[g] = c if g[0] == BOS else cont.get(g) or c
    return adj


def estimate(counts: NgramCounts, vocab: Iterable[str] = (), cutoffs: Sequence[int] = ()) -> dict[Gram, tuple[float, float]]:
    """n-gram -> (log10 p, log10 back-off). `vocab`: units that get a unigram even if the
    text never has them. cutoffs[k - 1]: drop k-grams whose KN count is below it (k >= 2)."""
    n = counts.order
    adj = _adjusted(counts)
    keep: list[set[Gram]] = []
    for k in range(1, n + 1):
        cut = cutoffs[k - 1] if k - 1 < len(cutoffs) and k >= 2 else 1
        keep.append({g for g, c in adj[k - 1].items() if c >= cut})
    # ARPA needs every kept n-gram's prefix and suffix (w2..wn) too
    for k in range(n, 1, -1):
        for g in keep[k - 1]:
            keep[k - 2].update(x for x in (g[:-1], g[1:]) if x != (BOS,))

    units = {g[0] for g in adj[0]} | set(vocab)
    units.discard(BOS)
    units.add(EOS)
    probs: dict[Gram, float] = {}  # linear probabilities, then logs
    gammas: dict[Gram, float] = {}
    for k in range(1, n + 1):
        a = adj[k - 1]
        ones = sum(1 for c in a.values() if c == 1)
        twos = sum(1 for c in a.values() if c == 2)
        d = ones / (ones + 2 * twos) if ones + 2 * twos else 0.5
        d = min(max(d, 0.05), 0.95)
        totals: collections.Counter = collections.Counter()
        for g, c in a.items():
            totals[g[:-1]] += c
        alpha: dict[Gram, float] = {g: max(a[g] - d, 0.0) / totals[g[:-1]] for g in keep[k - 1]}
        kept_mass: collections.Counter = collections.Counter()
        for g, v in alpha.items():
            kept_mass[g[:-1]] += v
        if k == 1:
            gamma = 1.0 - kept_mass[()]
            for u in units:
                probs[(u,)] = alpha.get((u,), 0.0) + gamma / len(units)
        else:
            for h, m in kept_mass.items():
                gammas[h] = 1.0 - m
            for g, v in alpha.items():
                probs[g] = v + gammas[g[:-1]] * _lower(probs, gammas, g[1:])
    out: dict[Gram, tuple[float, float]] = {}
    for g, p in probs.items():
        bow = gammas.get(g)
        out[g] = (math.log10(p), math.log10(bow) if bow else 0.0)
    out[(BOS,)] = (-99.0, math.log10(gammas[(BOS,)]) if gammas.get((BOS,)) else 0.0)
    return out


def _lower(probs: dict[Gram, float], gammas: dict[Gram, float], g: Gram) -> float:
    """p(g[-1] | g[:-1]) by back-off through the (linear) tables built so far."""
    bow = 1.0
    while g not in probs:
        bow *= gammas.get(g[:-1], 1.0)
        g = g[1:]
    return bow * probs[g]


def write_arpa(table: dict[Gram, tuple[float, float]], path: str | Path) -> None:
    path = Path(path)
    by_order: dict[int, list[Gram]] = collections.defaultdict(list)
    for g in table:
        by_order[len(g)].append(g)
    order = max(by_order)
    if path.suffix == ".gz":  # mtime 0: the same LM gives the same bytes (and checksum)
        f = io.TextIOWrapper(gzip.GzipFile(path, "wb", mtime=0), encoding="utf-8")
    else:
        f = open(path, "w", encoding="utf-8")
    with f:
        f.write("\\data\\\n")
        for k in range(1, order + 1):
            f.write(f"ngram {k}={len(by_order[k])}\n")
        for k in range(1, order + 1):
            f.write(f"\n\\{k}-grams:\n")
            for g in sorted(by_order[k]):
                lp, bow = table[g]
                line = f"{lp:.5f}\t{' '.join(g)}"
                if k < order and bow != 0.0:
                    line += f"\t{bow:.5f}"
                f.write(line + "\n")
        f.write("\n\\end\\\n")


def _iter_arpa(path: Path) -> Iterator[tuple[Gram, float, float]]:
    opener = gzip.open if path.suffix == ".gz" else open
    order, n = 0, 0
    try:
        with opener(path, "rt", encoding="utf-8") as f:  # type: ignore[operator]
            for line in f:
                line = line.strip()
                if not line or line.startswith("ngram ") or line in ("\\data\\", "\\end\\"):
                    continue
                if line.startswith("\\") and line.endswith("-grams:"):
                    order = int(line[1:].split("-")[0])
                    continue
                if order == 0:
                    continue
                parts = line.split()
                bow = float(parts[1 + order]) if len(parts) > 1 + order else 0.0
                n += 1
                yield tuple(parts[1 : 1 + order]), float(parts[0]), bow
    except (OSError, ValueError, IndexError, EOFError, UnicodeDecodeError) as e:
        raise LMError(f"cannot read ARPA language model {path}: {e}") from e
    if not n:
        raise LMError(f"{path}: no n-grams found (not an ARPA file?)")


def read_arpa(path: str | Path) -> dict[Gram, tuple[float, float]]:
    return {g: (lp, bow) for g, lp, bow in _iter_arpa(Path(path))}


# Binary form: MAGIC, header length (uint64 little-endian), JSON header, then the arrays,
# each at a multiple of _ALIGN from the file start (offsets in the header).
MAGIC = b"tingxie-ngram-lm"
_BINARY_VERSION = 1
_ALIGN = 64
_ARRAYS = (("keys", "<i8"), ("logp", "<f4"), ("bow", "<f4"))


def is_binary(path: str | Path) -> bool:
    """Whether `path` starts like a binary LM (else it is read as ARPA)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def units_sha256(units: Sequence[str]) -> str:
    """Digest of a unit table: a binary LM's keys are ids into exactly this table."""
    return hashlib.sha256("\n".join(units).encode("utf-8")).hexdigest()


class NgramLM:
    """Back-off n-gram over unit ids with natural-log scores, memoised per (context, unit).

    `score(state, unit)` returns (ln p(unit | state), next state); states are tuples of at
    most order - 1 unit ids (the start state is `start`). Units the LM does not know score
    `unk_logp`. The tables are sorted numpy arrays of packed n-gram keys (about 16 bytes an
    n-gram instead of ~1 kB as Python tuples), searched with `np.searchsorted`.
    """

    MAX_ORDER = 5  # packed keys of 5 ids of a ~6k-unit vocabulary fit in int64
    # Memo entries kept before the memos start afresh: about 250 bytes each, so the memos
    # stay near 12 MB (a server decoding for hours would otherwise hold hundreds of MB).
    # An utterance mostly uses entries of its own (about 2,300 a clip of real speech):
    # 300 clips decoded in the same time with 200,000 as with this (bench/lm_memo.py).
    MEMO_LIMIT = 50_000

    def __init__(self, grams: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]], base: int,
                 unk_logp: float = -10.0) -> None:
        self.base = base
        self.bos, self.eos = base - 2, base - 1
        self.order = max(grams)
        self._grams = grams  # order -> (sorted keys int64, ln p float32, ln back-off float32)
        self.unk_logp = unk_logp
        self.start: tuple[int, ...] = (self.bos,)
        self._cache: dict[tuple[tuple[int, ...], int], tuple[float, tuple[int, ...]]] = {}
        self._bounds: dict[tuple[int, ...], float] = {}  # max_score per state
        self._bows: dict[tuple[int, ...], float] = {}  # back-off weight per context
        self._states: dict[tuple[int, ...], tuple[int, ...]] = {}
        rows = np.full(base, -1, dtype=np.int64)  # unigram keys are unit ids: a direct index
        if 1 in grams:
            rows[grams[1][0]] = np.arange(len(grams[1][0]))
        self._unigram_rows: list[int] = rows.tolist()

    @classmethod
    def from_table(cls, table: dict[Gram, tuple[float, float]], units: Sequence[str]) -> "NgramLM":
        return cls._build(((g, lp, bow) for g, (lp, bow) in table.items()), units)

    @classmethod
    def load(cls, path: str | Path, units: Sequence[str]) -> "NgramLM":
        """An ARPA(.gz) file, or a binary written by `write_binary` for these units."""
        if is_binary(path):
            return cls.open_binary(path, units)
        return cls._build(_iter_arpa(Path(path)), units)

    def write_binary(self, path: str | Path, units: Sequence[str], source_sha256: str | None = None) -> None:
        """Write the tables for `open_binary`; source_sha256: the ARPA file they came from."""
        if len(units) + 2 != self.base:
            raise LMError(f"the LM was built for {self.base - 2} units, not {len(units)}")
        header: dict = {"version": _BINARY_VERSION, "base": self.base, "unk_logp": self.unk_logp,
                        "units_sha256": units_sha256(units), "source_sha256": source_sha256, "orders": {}}
        arrays: list[tuple[int, np.ndarray]] = []  # (offset from the first array, data)
        offset = 0
        for n in sorted(self._grams):
            entry = {"count": len(self._grams[n][0])}
            for (name, dtype), arr in zip(_ARRAYS, self._grams[n]):
                if name == "bow" and n == self.order and not arr.any():
                    continue  # the highest order has no back-off weights (and none is read)
                offset = -(-offset // _ALIGN) * _ALIGN
                entry[name] = offset
                arrays.append((offset, np.ascontiguousarray(arr, dtype=dtype)))
                offset += arrays[-1][1].nbytes
            header["orders"][str(n)] = entry
        text = json.dumps(header).encode("utf-8")
        start = -(-(len(MAGIC) + 8 + len(text)) // _ALIGN) * _ALIGN  # the first array's file offset
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(MAGIC + len(text).to_bytes(8, "little") + text)
            for off, arr in arrays:
                f.write(b"\0" * (start + off - f.tell()))
                f.write(arr.tobytes())
        tmp.replace(path)

    @classmethod
    def open_binary(cls, path: str | Path, units: Sequence[str], source_sha256: str | None = None) -> "NgramLM":
        """Memory-map a binary LM: nothing is parsed or copied, pages load as searches touch
        them (and are shared by every process that maps the file). source_sha256: the ARPA
        file it must have been built from (None: not checked)."""
        path = Path(path)
        try:
            with open(path, "rb") as f:
                buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as e:
            raise LMError(f"cannot map binary language model {path}: {e}") from e
        try:
            if buf[: len(MAGIC)] != MAGIC:
                raise ValueError("not a tingxie binary LM")
            size = int.from_bytes(buf[len(MAGIC) : len(MAGIC) + 8], "little")
            header = json.loads(bytes(buf[len(MAGIC) + 8 : len(MAGIC) + 8 + size]))
            if header.get("version") != _BINARY_VERSION:
                raise ValueError(f"format version {header.get('version')!r} is not supported")
            start = -(-(len(MAGIC) + 8 + size) // _ALIGN) * _ALIGN
            grams = {}
            for n, entry in header["orders"].items():
                count = int(entry["count"])
                grams[int(n)] = tuple(
                    np.frombuffer(buf, dtype=dtype, count=count, offset=start + int(entry[name])) if name in entry
                    else np.zeros(count, dtype=dtype)  # calloc: no memory is touched
                    for name, dtype in _ARRAYS
                )
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
            raise LMError(f"{path}: corrupt binary language model ({e})") from e
        if header["base"] != len(units) + 2 or header["units_sha256"] != units_sha256(units):
            raise LMError(f"{path} was built for another unit table than this model's; rebuild it with tingxie lm")
        if source_sha256 is not None and header["source_sha256"] != source_sha256:
            raise LMError(f"{path} was built from another ARPA file than the model's; rebuild it with tingxie lm")
        return cls(grams, header["base"], float(header["unk_logp"]))

    @classmethod
    def _build(cls, entries: Iterable[tuple[Gram, float, float]], units: Sequence[str]) -> "NgramLM":
        base = len(units) + 2
        index = {u: i for i, u in enumerate(units)}
        index[BOS], index[EOS] = base - 2, base - 1
        cols: dict[int, tuple[array, array, array]] = {}  # compact while reading
        for g, lp, bow in entries:
            if len(g) > cls.MAX_ORDER:
                raise LMError(f"n-grams above order {cls.MAX_ORDER} are not supported")
            key = 0
            for u in g:
                i = index.get(u)
                if i is None:
                    break  # a unit this model cannot emit
                key = key * base + i
            else:
                k, p, b = cols.setdefault(len(g), (array("q"), array("f"), array("f")))
                k.append(key)
                p.append(lp * LN10)
                b.append(bow * LN10)
        if not cols:
            raise LMError("the language model shares no units with the model")
        grams = {}
        for n, (k, p, b) in cols.items():
            keys = np.frombuffer(k, dtype=np.int64)
            order = np.argsort(keys, kind="stable")
            grams[n] = (keys[order], np.frombuffer(p, dtype=np.float32)[order], np.frombuffer(b, dtype=np.float32)[order])
        return cls(grams, base)

    def _find(self, g: tuple[int, ...]) -> int:
        """Row of n-gram g in its order's table, or -1."""
        if len(g) == 1:
            return self._unigram_rows[g[0]]
        table = self._grams.get(len(g))
        if table is None:
            return -1
        key = 0
        for u in g:
            key = key * self.base + u
        keys = table[0]
        i = int(keys.searchsorted(key))  # the method: np.searchsorted's dispatch costs as much again
        return i if i < len(keys) and keys[i] == key else -1

    def _bow(self, g: tuple[int, ...]) -> float:
        hit = self._bows.get(g)  # contexts recur far more than (context, unit) pairs
        if hit is None:
            i = self._find(g)
            if len(self._bows) > self.MEMO_LIMIT:
                self._bows.clear()
            hit = self._bows[g] = float(self._grams[len(g)][2][i]) if i >= 0 else 0.0
        return hit

    def clear_cache(self) -> None:
        for memo in (self._cache, self._bows, self._bounds, self._states):
            memo.clear()

    def max_score(self, state: tuple[int, ...]) -> float:
        """An upper bound on `score(state, u)` over every unit u (memoised per state): the
        best n-gram at each back-off level plus the back-off weights that lead there."""
        hit = self._bounds.get(state)
        if hit is not None:
            return hit
        acc, best, h = 0.0, -math.inf, state
        while True:  # the back-off levels as `score` walks them, summed in the same order
            table = self._grams.get(len(h) + 1)
            if table is not None:
                key = 0
                for u in h:
                    key = key * self.base + u
                lo, hi = table[0].searchsorted([key * self.base, (key + 1) * self.base])
                if hi > lo:
                    best = max(best, acc + float(table[1][lo:hi].max()))
            if not h:
                break
            acc += self._bow(h)
            h = h[1:]
        best = max(best, acc + self.unk_logp)
        if len(self._bounds) > self.MEMO_LIMIT:
            self._bounds.clear()
        self._bounds[state] = best
        return best

    def score(self, state: tuple[int, ...], unit: int) -> tuple[float, tuple[int, ...]]:
        key = (state, unit)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        full = state + (unit,)
        n = len(full)
        rows = {}  # n-gram length -> row of that suffix of `full` (-1: absent), as searched
        bow, k = 0.0, n
        while True:
            g = full[n - k :]
            i = rows[k] = self._find(g)
            if i >= 0:
                lp = float(self._grams[k][1][i])
                break
            if k == 1:
                lp = self.unk_logp
                break
            bow += self._bow(g[:-1])
            k -= 1
        # The next state: the longest suffix that has extensions (a back-off weight), so
        # that fewer states are distinct; the suffixes searched above are not searched again.
        j = min(n, self.order - 1)
        while j:
            i = rows.get(j)
            if i is None:
                i = self._find(full[n - j :])
            if i >= 0 and self._grams[j][2][i] != 0.0:
                break
            j -= 1
        nxt = full[n - j :] if j else ()
        nxt = self._states.setdefault(nxt, nxt)  # one tuple per state: the memo holds many of each
        out = (bow + lp, nxt)
        if len(self._cache) > self.MEMO_LIMIT or len(self._states) > self.MEMO_LIMIT:
            self.clear_cache()
        self._cache[key] = out
        return out

    def sentence_logp(self, ids: Sequence[int], eos: bool = True) -> float:
        state, total = self.start, 0.0
        for u in list(ids) + ([self.eos] if eos else []):
            lp, state = self.score(state, u)
            total += lp
        return total


def load_lm(d, shipped: dict | None, units: Sequence[str]):
    """(NgramLM or None, weight, bonus, tuned beam or None) for `d.lm` of a DecodingConfig:
    "auto" for the model's own LM (`shipped`, a model directory's LM section; its
    memory-mapped binary when it has one), "none", or the path of an ARPA file. Errors are
    ValueErrors naming the file."""
    if d.lm in (None, "none") or (d.lm == "auto" and shipped is None):
        return None, 0.0, 0.0, None
    try:
        if d.lm == "auto":
            weight, bonus, beam = shipped["weight"], shipped["bonus"], shipped.get("beam")
            if shipped.get("binary") is not None:
                lm = NgramLM.open_binary(shipped["binary"], units, shipped["source_sha256"])
            else:
                lm = NgramLM.load(shipped["file"], units)
        else:
            path, weight, bonus, beam = Path(d.lm), 0.5, 1.0, None
            if not path.is_file():
                raise ValueError(f"language model {path} not found")
            lm = NgramLM.load(path, units)
    except LMError as e:
        raise ValueError(str(e)) from e
    weight = weight if d.lm_weight is None else d.lm_weight
    bonus = bonus if d.lm_bonus is None else d.lm_bonus
    return lm, weight, bonus, beam
