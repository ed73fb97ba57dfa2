"""Punctuation restoration for unit text: a small character-level BiGRU.

The model reads the spoken-form text a recogniser emits (Han characters; a Latin word
counts as one `<latin>` symbol) and predicts, for each character, the mark that follows
it: nothing, ，。？！ or 、. It is trained from punctuated text alone
(`asr.text.punct_train`), so it does not depend on any acoustic model and serves every
model directory, imported WeNet ones included.

Pauses between tokens are an optional extra cue (`Punctuator.predict(pauses=...)`): a
silence after a character adds `pause_weight` per second (beyond `pause_floor`) to the
log-odds of a mark there.

A punctuation model is a folder: `config.json` (sizes, labels, pause settings),
`vocab.txt` (one symbol a line, index = line number) and `model.safetensors` (weights
in float16).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch
from safetensors.torch import load_file, save_file

__all__ = ["PunctConfig", "PunctModel", "Punctuator", "LABELS", "PAD", "UNK", "LATIN", "symbols",
           "default_punct_dir"]

LABELS = ("", "，", "。", "？", "！", "、")
PAD, UNK, LATIN = "<pad>", "<unk>", "<latin>"
_LATIN_WORD = re.compile(r"[A-Za-z0-9']+")


def default_punct_dir() -> Path:
    """The punctuation model shipped in the repository (models/punct)."""
    return Path(__file__).resolve().parents[2] / "models" / "punct"


def symbols(text: str) -> list[str]:
    """The model's input symbols for spoken-form text: one per Han character, one
    `<latin>` per Latin word; spaces dropped. `spans` gives their character ranges."""
    return [s for s, _ in spans(text)]


def spans(text: str) -> list[tuple[str, tuple[int, int]]]:
    out: list[tuple[str, tuple[int, int]]] = []
    i = 0
    while i < len(text):
        m = _LATIN_WORD.match(text, i)
        if m:
            out.append((LATIN, (i, m.end())))
            i = m.end()
        elif text[i].isspace():
            i += 1
        else:
            out.append((text[i], (i, i + 1)))
            i += 1
    return out


@dataclass(frozen=True)
class PunctConfig:
    vocab_size: int
    embed: int = 128
    hidden: int = 128
    layers: int = 2
    # Pause cue: log-odds of a mark after a character grow by pause_weight per second of
    # silence beyond pause_floor (0: off).
    pause_weight: float = 0.0
    pause_floor: float = 0.3


class PunctModel(torch.nn.Module):
    def __init__(self, cfg: PunctConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = torch.nn.Embedding(cfg.vocab_size, cfg.embed, padding_idx=0)
        self.rnn = torch.nn.GRU(cfg.embed, cfg.hidden, num_layers=cfg.layers, batch_first=True, bidirectional=True)
        self.out = torch.nn.Linear(2 * cfg.hidden, len(LABELS))

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) symbol ids -> (B, T, labels) logits."""
        x = self.embed(ids)
        if lengths is not None:
            x = torch.nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            y, _ = self.rnn(x)
            y, _ = torch.nn.utils.rnn.pad_packed_sequence(y, batch_first=True, total_length=ids.size(1))
        else:
            y, _ = self.rnn(x)
        return self.out(y)


class Punctuator:
    """A loaded punctuation model: `predict` marks for one text, `punctuate` a string."""

    MAX_SYMBOLS = 400  # longer inputs are punctuated in windows of this many symbols

    def __init__(self, model: PunctModel, vocab: Sequence[str]) -> None:
        self.model = model.eval()
        self.vocab = list(vocab)
        self.index = {s: i for i, s in enumerate(self.vocab)}
        self.unk = self.index[UNK]

    @classmethod
    def load(cls, path: str | Path) -> "Punctuator":
        path = Path(path)
        if not (path / "model.safetensors").is_file():
            raise FileNotFoundError(f"no punctuation model in {path} (model.safetensors missing)")
        cfg = PunctConfig(**json.loads((path / "config.json").read_text(encoding="utf-8"))["model"])
        vocab = (path / "vocab.txt").read_text(encoding="utf-8").split("\n")[: cfg.vocab_size]
        model = PunctModel(cfg)
        model.load_state_dict({k: v.float() for k, v in load_file(path / "model.safetensors").items()})
        return cls(model, vocab)

    def save(self, path: str | Path, extra: dict | None = None) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_file({k: v.half().contiguous() for k, v in self.model.state_dict().items()}, path / "model.safetensors")
        (path / "vocab.txt").write_text("\n".join(self.vocab), encoding="utf-8")
        meta = {"model": asdict(self.model.cfg), "labels": list(LABELS), **(extra or {})}
        (path / "config.json").write_text(json.dumps(meta, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")

    def encode(self, syms: Sequence[str]) -> list[int]:
        return [self.index.get(s, self.unk) for s in syms]

    @torch.inference_mode()
    def predict(self, syms: Sequence[str], pauses: Sequence[float] | None = None, final: bool = True) -> list[int]:
        """The label index (into LABELS) after each symbol. pauses: seconds of silence
        after each symbol (the last one's is ignored). final: the text ends a sentence,
        so its last symbol gets a sentence mark (。？！) even if the model is unsure."""
        n = len(syms)
        if n == 0:
            return []
        ids = torch.tensor(self.encode(syms))
        logits = torch.cat([self.model(ids[None, i : i + self.MAX_SYMBOLS])[0]
                            for i in range(0, n, self.MAX_SYMBOLS)])
        logp = logits.log_softmax(-1)
        cfg = self.model.cfg
        if pauses is not None and cfg.pause_weight:
            gap = torch.tensor([max(0.0, p - cfg.pause_floor) for p in pauses[:n]] + [0.0] * (n - len(pauses)))
            # more log-odds for "some mark": the none label loses what the pause adds
            logp[:, 0] -= cfg.pause_weight * gap[:n]
        labels = logp.argmax(-1).tolist()
        if final:
            last = logp[-1]
            labels[-1] = max((2, 3, 4), key=lambda k: float(last[k]))
        return labels

    def punctuate(self, text: str, final: bool = True) -> str:
        """`text` with marks inserted after the symbols the model marks."""
        sp = spans(text)
        labels = self.predict([s for s, _ in sp], final=final)
        out, pos = [], 0
        for (_, (a, b)), lab in zip(sp, labels):
            out.append(text[pos:b])
            pos = b
            if LABELS[lab]:
                out.append(LABELS[lab])
                while pos < len(text) and text[pos].isspace():
                    pos += 1  # no space after a mark
        out.append(text[pos:])
        return "".join(out)

