"""What formatting a result gets (no torch here: the server's session core imports it)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TextOptions"]


@dataclass(frozen=True)
class TextOptions:
    """punctuation: marks from the punctuation model (where one is loaded); itn: spoken
    numbers written as figures (`asr.text.itn`)."""

    punctuation: bool = True
    itn: bool = True
