"""Training data: JSONL manifests, duration-bucketed batches, feature collation.

A manifest line is {"audio": path (relative to the manifest's folder or absolute),
"text": normalised transcript, "duration": seconds, ...}.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch

from ..audio import AudioError, read_audio
from ..config import FeatureConfig
from ..data.normalize import normalize_text
from ..features import fbank, resample
from ..tokens import Tokenizer
from .flat_start import speech_frames

log = logging.getLogger(__name__)

__all__ = ["Utterance", "read_manifest", "duration_batches", "UtteranceDataset", "Item", "Batch", "collate"]


@dataclass(frozen=True)
class Utterance:
    audio: Path
    text: str
    duration: float
    id: str = ""


def read_manifest(path: str | Path, normalize: bool = False) -> list[Utterance]:
    """Read a JSONL manifest; with `normalize`, transcripts are put in spoken form
    (asr.data.normalize: numbers as characters, punctuation removed)."""
    path = Path(path)
    norm = _normalizer() if normalize else (lambda t: t)
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            audio = Path(d["audio"])
            out.append(
                Utterance(
                    audio if audio.is_absolute() else path.parent / audio,
                    norm(d["text"]),
                    float(d["duration"]),
                    str(d.get("id", audio.stem)),
                )
            )
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}:{n}: bad manifest line ({e})") from e
    return out


def _normalizer():
    return normalize_text


def duration_batches(
    utts: Sequence[Utterance], max_seconds: float, seed: int, max_utts: int = 256, shuffle: bool = True
) -> list[list[int]]:
    """Batches of similar-length utterances, each holding at most `max_seconds` of padded
    audio; batch order shuffled by `seed` (one seed per epoch), or shortest first when
    `shuffle` is off (SortaGrad: short utterances first help CTC leave its all-blank start)."""
    rng = random.Random(seed)
    order = sorted(range(len(utts)), key=lambda i: (utts[i].duration, rng.random()))
    batches, cur, longest = [], [], 0.0
    for i in order:
        d = utts[i].duration
        if cur and (max(longest, d) * (len(cur) + 1) > max_seconds or len(cur) >= max_utts):
            batches.append(cur)
            cur, longest = [], 0.0
        cur.append(i)
        longest = max(longest, d)
    if cur:
        batches.append(cur)
    if shuffle:
        rng.shuffle(batches)
    return batches


class Item(NamedTuple):
    feats: torch.Tensor  # (T, F)
    tokens: list[int]
    aux: list[int] | None = None  # auxiliary CTC targets (pinyin syllables)
    speech: torch.Tensor | None = None  # (T,) bool speech mask from the unaugmented features (flat start)


class Batch(NamedTuple):
    feats: torch.Tensor  # (B, T, F)
    feat_lens: torch.Tensor  # (B,)
    targets: torch.Tensor  # (B, U), padded with -1
    target_lens: torch.Tensor  # (B,)
    aux: torch.Tensor | None = None
    aux_lens: torch.Tensor | None = None
    speech: torch.Tensor | None = None  # (B, T) bool, padded with False


class UtteranceDataset(torch.utils.data.Dataset):
    """Index -> Item (features (T, F), token ids, ...). Augmentation hooks run on the
    waveform (`wave_aug(wav, rng)`) and on the features (`feat_aug(feats, rng)`)."""

    def __init__(
        self,
        utts: Sequence[Utterance],
        tokenizer: Tokenizer,
        features: FeatureConfig = FeatureConfig(),
        wave_aug: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
        feat_aug: Callable[[torch.Tensor, np.random.Generator], torch.Tensor] | None = None,
        seed: int = 0,
        aux_encode: Callable[[str], list[int]] | None = None,
        speech_mask: bool = False,
    ) -> None:
        self.utts = list(utts)
        self.tokenizer = tokenizer
        self.features = features
        self.wave_aug = wave_aug
        self.feat_aug = feat_aug
        self.seed = seed
        self.aux_encode = aux_encode  # second target sequence per item (auxiliary CTC)
        self.speech_mask = speech_mask  # per-frame speech mask for flat-start targets
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.utts)

    def load(self, i: int) -> np.ndarray:
        data, rate = read_audio(self.utts[i].audio)
        wav = data.mean(axis=0)
        if rate != self.features.sample_rate:
            wav = resample(torch.from_numpy(wav), rate, self.features.sample_rate).numpy()
        return wav

    def __getitem__(self, i: int) -> Item | None:
        rng = np.random.default_rng((self.seed, self.epoch, i))
        try:
            wav = self.load(i)
        except AudioError as e:
            # One unreadable file must not end a long training run: skip it, say so.
            log.warning("skipping utterance: %s", e)
            return None
        if self.wave_aug is not None:
            wav = self.wave_aug(wav, rng)
        feats = fbank(torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32)), self.features)
        speech = None
        if self.speech_mask:  # before SpecAugment, whose masks would read as silence

            speech = speech_frames(feats)
        if self.feat_aug is not None:
            feats = self.feat_aug(feats, rng)
        text = self.utts[i].text
        return Item(feats, self.tokenizer.encode(text), self.aux_encode(text) if self.aux_encode else None, speech)


def _pad_targets(seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    lens = torch.tensor([len(t) for t in seqs])
    out = torch.full((len(seqs), max(1, int(lens.max()))), -1, dtype=torch.long)
    for k, t in enumerate(seqs):
        out[k, : len(t)] = torch.tensor(t, dtype=torch.long)
    return out, lens


def collate(items: list[Item | None]) -> Batch:
    """Pad a list of items into a Batch; auxiliary targets and speech masks are included
    when the items have them. Skipped (None) items are dropped; an all-skipped batch has B = 0."""
    items = [it for it in items if it is not None]
    if not items:
        return Batch(torch.zeros(0, 0, 80), torch.zeros(0, dtype=torch.long), torch.zeros(0, 1, dtype=torch.long),
                     torch.zeros(0, dtype=torch.long))
    feats = torch.nn.utils.rnn.pad_sequence([it.feats for it in items], batch_first=True)
    feat_lens = torch.tensor([it.feats.size(0) for it in items])
    targets, target_lens = _pad_targets([it.tokens for it in items])
    aux = aux_lens = speech = None
    if items[0].aux is not None:
        aux, aux_lens = _pad_targets([it.aux for it in items])
    if items[0].speech is not None:
        speech = torch.nn.utils.rnn.pad_sequence([it.speech for it in items], batch_first=True)
    return Batch(feats, feat_lens, targets, target_lens, aux, aux_lens, speech)
