"""Tokenizers: a unit table (`units.txt`, `<blank>` = 0), optionally with a sentencepiece
model for Latin words.

Han characters (and other non-Latin symbols) are one unit each; runs of Latin letters,
digits and apostrophes are words, which the sentencepiece model splits into pieces that
start with `▁` at a word start. Decoded text has no space between Han characters nor
between a Han character and a Latin word, and one space between two Latin words:
pieces 打 开 ▁WI ▁FI 网 络 decode to "打开WI FI网络".
"""

from __future__ import annotations

import io
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import sentencepiece as spm

__all__ = ["Tokenizer", "TokenizerError", "BLANK", "UNK", "SOS_EOS", "read_units", "write_units", "train_units"]

BLANK, UNK, SOS_EOS = "<blank>", "<unk>", "<sos/eos>"
WORD_START = "\u2581"  # ▁
_LATIN_WORD = re.compile(r"[A-Za-z0-9']+")


class TokenizerError(ValueError):
    """The unit table or sentencepiece model is malformed or inconsistent."""


def read_units(path: str | Path) -> list[str]:
    """Read `unit id` lines; ids must be contiguous from 0 and `<blank>` must be 0."""
    units: dict[int, str] = {}
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise TokenizerError(f"{path}:{n}: expected 'unit id', got {line!r}")
        uid = int(parts[1])
        if uid in units:
            raise TokenizerError(f"{path}:{n}: id {uid} appears twice")
        units[uid] = parts[0]
    table = [units.get(i) for i in range(len(units))]
    if any(u is None for u in table):
        raise TokenizerError(f"{path}: ids are not contiguous from 0")
    if table[0] != BLANK:
        raise TokenizerError(f"{path}: id 0 must be {BLANK}, found {table[0]!r}")
    return table  # type: ignore[return-value]


def write_units(units: Sequence[str], path: str | Path) -> None:
    Path(path).write_text("".join(f"{u} {i}\n" for i, u in enumerate(units)), encoding="utf-8")


def _is_latin(piece: str) -> bool:
    return bool(piece) and (piece[0] == WORD_START or piece.isascii())


class Tokenizer:
    """Text <-> unit ids."""

    def __init__(self, units: Sequence[str], bpe_model: str | Path | None = None) -> None:
        self.units = list(units)
        self.index = {u: i for i, u in enumerate(self.units)}
        if len(self.index) != len(self.units):
            raise TokenizerError("duplicate units in the unit table")
        self.unk = self.index.get(UNK, None)
        self.sp: spm.SentencePieceProcessor | None = None
        if bpe_model is not None:
            self.sp = spm.SentencePieceProcessor(model_file=str(bpe_model))
            missing = [
                self.sp.id_to_piece(i)
                for i in range(self.sp.get_piece_size())
                if not (self.sp.is_control(i) or self.sp.is_unknown(i))
                and self.sp.id_to_piece(i) not in self.index
            ]
            if missing:
                raise TokenizerError(f"{len(missing)} sentencepiece pieces are not in the unit table, e.g. {missing[:5]}")

    @classmethod
    def from_dir(cls, path: str | Path) -> "Tokenizer":
        path = Path(path)
        bpe = path / "bpe.model"
        return cls(read_units(path / "units.txt"), bpe if bpe.exists() else None)

    def __len__(self) -> int:
        return len(self.units)

    def _word_pieces(self, word: str) -> list[str]:
        if self.sp is not None:
            return self.sp.encode(word.upper(), out_type=str)
        # No sentencepiece model: letters as units (WeNet char models do the same).
        return [WORD_START + word.upper()] if WORD_START + word.upper() in self.index else list(word.upper())

    def pieces(self, text: str) -> list[str]:
        out: list[str] = []
        pos = 0
        for m in _LATIN_WORD.finditer(text):
            out.extend(c for c in text[pos : m.start()] if not c.isspace())
            out.extend(self._word_pieces(m.group()))
            pos = m.end()
        out.extend(c for c in text[pos:] if not c.isspace())
        return out

    def encode(self, text: str) -> list[int]:
        """Unit ids for `text`; unknown units map to `<unk>` (or raise if there is none)."""
        ids = []
        for p in self.pieces(text):
            i = self.index.get(p, self.unk)
            if i is None:
                raise TokenizerError(f"unit {p!r} is not in the unit table and there is no {UNK}")
            ids.append(i)
        return ids

    def id_to_piece(self, i: int) -> str:
        return self.units[i]

    def decode(self, ids: Iterable[int]) -> str:
        return self.join([self.units[i] for i in ids])

    @staticmethod
    def join(pieces: Iterable[str]) -> str:
        """Han units joined directly; a word-start piece after a Latin piece gets a space."""
        text = ""
        prev_latin = False
        for p in pieces:
            if p in (BLANK, SOS_EOS):
                continue
            latin = _is_latin(p) and p != UNK
            if p.startswith(WORD_START):
                p = p[1:]
                if prev_latin:
                    text += " "
            text += p
            prev_latin = latin
        return text

    def piece_text(self, i: int) -> str:
        """Display text of one unit (without the word-start mark)."""
        return self.units[i].lstrip(WORD_START)


def train_units(
    texts: Iterable[str], out_dir: str | Path, max_han: int = 6000, bpe_vocab: int = 300, min_count: int = 1
) -> Tokenizer:
    """Build `units.txt` (and `bpe.model` when the texts contain Latin words) from texts.

    Units: <blank>, <unk>, the `max_han` most frequent non-Latin characters, the
    sentencepiece pieces, and <sos/eos> last (WeNet's order).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    chars: Counter[str] = Counter()
    words: list[str] = []
    for t in texts:
        pos = 0
        for m in _LATIN_WORD.finditer(t):
            chars.update(c for c in t[pos : m.start()] if not c.isspace())
            words.append(m.group().upper())
            pos = m.end()
        chars.update(c for c in t[pos:] if not c.isspace())
    han = [c for c, n in chars.most_common(max_han) if n >= min_count]
    pieces: list[str] = []
    bpe_path = out_dir / "bpe.model"
    if words:
        model = io.BytesIO()
        distinct = len(set("".join(words)))
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(words),
            model_writer=model,
            vocab_size=max(min(bpe_vocab, len(set(words)) + distinct + 2), distinct + 3),
            model_type="bpe",
            character_coverage=1.0,
            hard_vocab_limit=False,
            bos_id=-1,
            eos_id=-1,
            unk_id=0,
            minloglevel=2,
        )
        bpe_path.write_bytes(model.getvalue())
        sp = spm.SentencePieceProcessor(model_file=str(bpe_path))
        pieces = [
            sp.id_to_piece(i)
            for i in range(sp.get_piece_size())
            if not (sp.is_control(i) or sp.is_unknown(i))
        ]
    elif bpe_path.exists():
        bpe_path.unlink()
    seen = set(pieces)
    units = [BLANK, UNK] + [c for c in han if c not in seen] + pieces + [SOS_EOS]
    write_units(units, out_dir / "units.txt")
    return Tokenizer.from_dir(out_dir)
