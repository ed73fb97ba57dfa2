"""Readable transcripts for the server: hotword lists and display text per session.

`TextService` is built once by the app from its settings: the punctuation model
(`--punct-model`), the server-wide hotword list (`--hotwords FILE`, merged into every
session's list) and the defaults of `punctuation` and `itn`. Sessions call `context`
with the `hotwords` of their start message and `format` for each final and partial.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from asr.decoding.context import ContextGraph, HotwordError, HotwordLimits, parse_hotwords
from asr.recognizer import Result
from asr.text.format import Formatter
from asr.text.options import TextOptions
from asr.text.punct import Punctuator, default_punct_dir

__all__ = ["TextService"]

log = logging.getLogger("tingxie.text")


class TextService:
    def __init__(self, rec: Any, punct_model: str | Path | None = None, hotwords_file: str | Path | None = None,
                 boost: float = 2.0, limits: HotwordLimits = HotwordLimits()) -> None:
        self.rec = rec
        self.boost = boost
        self.limits = limits
        path = Path(punct_model) if punct_model else default_punct_dir()
        if punct_model or (path / "model.safetensors").is_file():
            self.formatter = Formatter(Punctuator.load(path))
        else:
            log.warning("no punctuation model at %s: finals are not punctuated", path)
            self.formatter = Formatter(None)
        self.server_phrases: list[tuple[list[int], float]] = []
        if hotwords_file:
            text = Path(hotwords_file).read_text(encoding="utf-8")
            try:
                self.server_phrases = parse_hotwords(text, rec.tokenizer, limits, boost)
            except HotwordError as e:
                raise ValueError(f"--hotwords {hotwords_file}: {e}") from None
        self._server_graph = ContextGraph(self.server_phrases) if self.server_phrases else None

    @property
    def can_punctuate(self) -> bool:
        return self.formatter.can_punctuate

    def context(self, value: Any = None, prompt: bool = False) -> ContextGraph | None:
        """The context graph for a session: the server's list plus `value` (what a client
        sent; raises HotwordError). prompt: `value` is free text (the OpenAI `prompt`)."""
        if value is None or value == [] or value == {} or value == "":
            return self._server_graph
        if prompt:
            from asr.decoding.context import prompt_hotwords  # noqa: PLC0415

            phrases = prompt_hotwords(value, self.rec.tokenizer, self.limits, self.boost)
        else:
            phrases = parse_hotwords(value, self.rec.tokenizer, self.limits, self.boost)
        return ContextGraph(self.server_phrases + phrases) if self.server_phrases or phrases else None

    def spellable(self, phrase: str) -> bool:
        """Whether `phrase` is a usable hotword for this model (units known, within limits)."""
        try:
            return bool(parse_hotwords([phrase], self.rec.tokenizer, self.limits, self.boost))
        except HotwordError:
            return False

    def format(self, result: Result, options: TextOptions, final: bool = True) -> Result:
        return self.formatter.format(result, options, final)
