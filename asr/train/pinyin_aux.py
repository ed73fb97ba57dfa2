"""Auxiliary CTC targets for training: the transcript's toneless pinyin syllables.

A character CTC model for Mandarin has ~5,500 output classes, most of them rare. Early in
training it sits on a long plateau where it has learnt only the character frequencies
and emits blanks, because each class gets a gradient signal only where that character
occurs. The ~400 toneless syllables each occur far more often, so a second CTC head on
the same encoder output, trained on syllables, gives the encoder a dense acoustic signal
from the first updates (multi-task CTC with phone-like targets). The head exists only
during training: it is neither exported nor used for recognition.

Syllables come from `pypinyin` (the `data` extra); non-Han text (Latin words, digits
left after normalisation) has no syllables and is skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

__all__ = ["PinyinUnits"]

BLANK, UNK = "<blank>", "<unk>"


def syllables(text: str) -> list[str]:
    from pypinyin import Style, lazy_pinyin  # noqa: PLC0415 (optional extra)

    return lazy_pinyin(text, style=Style.NORMAL, errors=lambda _chars: [])


class PinyinUnits:
    """Toneless syllable table: id 0 blank, 1 unknown, then the syllables, sorted."""

    def __init__(self, units: list[str]) -> None:
        if units[:2] != [BLANK, UNK]:
            raise ValueError("a pinyin unit table starts with <blank> and <unk>")
        self.units = units
        self.index = {u: i for i, u in enumerate(units)}

    def __len__(self) -> int:
        return len(self.units)

    @classmethod
    def build(cls, texts: Iterable[str]) -> "PinyinUnits":
        found: set[str] = set()
        for t in texts:
            found.update(syllables(t))
        return cls([BLANK, UNK, *sorted(found)])

    @classmethod
    def load_or_build(cls, path: Path, texts: Iterable[str]) -> "PinyinUnits":
        """The table saved at `path` (so a resumed run keeps its ids), else a new one."""
        if path.exists():
            return cls(path.read_text(encoding="utf-8").split("\n")[:-1])
        table = cls.build(texts)
        path.write_text("".join(u + "\n" for u in table.units), encoding="utf-8")
        return table

    def encode(self, text: str) -> list[int]:
        return [self.index.get(s, 1) for s in syllables(text)]
