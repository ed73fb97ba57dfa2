"""Full-context recognition of many utterances at once for the batch pipeline: the
engine's batch limits around `Recognizer.recognize_features` (sorted by length, padded
into batches through `CTCModel.forward`, then CTC search per utterance, tokens mapped to
absolute times).

Batching is bounded by padded fbank frames (memory and wasted work both grow with the
longest member), so sorting by length first keeps padding small. The result for an
utterance is what `Recognizer.transcribe` gives for its audio (padding is masked in the
encoder), up to float rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..config import ConfigError
from ..decoding.context import ContextGraph
from ..recognizer import Recognizer, Result, batch_limits, length_batches, precision_name

__all__ = ["EngineOptions", "BatchEngine", "precision_name"]


@dataclass(frozen=True)
class EngineOptions:
    """max_batch_frames: padded fbank frames (10 ms each) per model call (0: 4000 on a
    CPU, 80000 on a GPU); max_batch: utterances per call (0: 64 on a CPU, 256 on a GPU).
    Precision is the recognizer's (`Recognizer(..., precision=)`: bf16 autocast is
    about 2x faster on CPUs with AVX512-BF16 or AMX)."""

    max_batch_frames: int = 0
    max_batch: int = 0

    def __post_init__(self) -> None:
        if self.max_batch_frames < 0 or self.max_batch < 0:
            raise ConfigError("max_batch_frames and max_batch must be positive (or 0: by device)")

    def limits(self, device: torch.device) -> tuple[int, int]:
        """(max_batch_frames, max_batch) on `device`."""
        frames, batch = batch_limits(device)
        return self.max_batch_frames or frames, self.max_batch or batch


class BatchEngine:
    """Recognises utterances given as features (the recognizer's `full_pass_features`),
    batched; stateless between calls."""

    def __init__(self, recognizer: Recognizer, options: EngineOptions = EngineOptions()) -> None:
        self.rec = recognizer
        self.options = options
        self.max_frames, self.max_batch = options.limits(recognizer.device)

    def batches(self, lengths: Sequence[int]) -> list[list[int]]:
        """Indices grouped into batches, longest first, each within the frame budget."""
        return length_batches(lengths, self.max_frames, self.max_batch)

    def recognize(self, feats: Sequence[torch.Tensor], t0: Sequence[float], t_end: Sequence[float],
                  contexts: Sequence[ContextGraph | None] | None = None) -> list[Result]:
        """Results for utterances with features (frames, mel) that start at t0 and end at
        t_end (seconds on the file's clock; token times are absolute); contexts: hotwords
        (a context graph or None) per utterance."""
        return self.rec.recognize_features(feats, t0, t_end, self.max_frames, self.max_batch, contexts)
