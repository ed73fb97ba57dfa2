"""Full-context recognition of many utterances at once: sorted by length, padded into
batches through `CTCModel.forward`, then CTC search per utterance, tokens mapped to
absolute times.

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
from ..features import fbank
from ..recognizer import Recognizer, Result

__all__ = ["EngineOptions", "BatchEngine", "precision_name"]

# Padded fbank frames per model call when not given. On a CPU large batches are slower,
# not faster: activations (the subsampling convolution's most of all) outgrow the caches,
# while one utterance already makes matrix products big enough. Measured on the 11 M
# model (docs/benchmarks.md): 2000-4000 frames best, 40000 half as fast. A GPU wants
# large batches.
CPU_BATCH_FRAMES = 4000
GPU_BATCH_FRAMES = 80_000


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
        gpu = device.type == "cuda"
        return (self.max_batch_frames or (GPU_BATCH_FRAMES if gpu else CPU_BATCH_FRAMES),
                self.max_batch or (256 if gpu else 64))


def precision_name(recognizer: Recognizer) -> str:
    """The recognizer's compute precision as a `precision=` value (fp32, bf16, fp16)."""
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[recognizer.compute_dtype]


class BatchEngine:
    """Recognises utterances given as fbank features, batched; stateless between calls."""

    def __init__(self, recognizer: Recognizer, options: EngineOptions = EngineOptions()) -> None:
        self.rec = recognizer
        self.options = options
        self.max_frames, self.max_batch = options.limits(recognizer.device)

    def features(self, samples: torch.Tensor) -> torch.Tensor:
        """(frames, mel) fbank of 16 kHz float32 samples (what transcribe computes)."""
        return fbank(samples, self.rec.features)

    def batches(self, lengths: Sequence[int]) -> list[list[int]]:
        """Indices grouped into batches, longest first, each within the frame budget."""
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        out: list[list[int]] = []
        cur: list[int] = []
        for i in order:
            # Sorted descending: the first member is the longest, so padded size is
            # len(batch) * lengths[batch[0]].
            if cur and ((len(cur) + 1) * lengths[cur[0]] > self.max_frames or len(cur) >= self.max_batch):
                out.append(cur)
                cur = []
            cur.append(i)
        if cur:
            out.append(cur)
        return out

    def recognize(self, feats: Sequence[torch.Tensor], t0: Sequence[float], t_end: Sequence[float],
                  contexts: Sequence[ContextGraph | None] | None = None) -> list[Result]:
        """Results for utterances with features (frames, mel) that start at t0 and end at
        t_end (seconds on the file's clock; token times are absolute); contexts: hotwords
        (a context graph or None) per utterance."""
        ctx = list(contexts) if contexts is not None else [None] * len(feats)
        results: list[Result | None] = [None] * len(feats)
        lengths = [int(f.size(0)) for f in feats]
        todo = [i for i, n in enumerate(lengths) if n >= self.rec.min_frames]
        for i in set(range(len(feats))) - set(todo):  # too short for one encoder frame
            results[i] = self._decode(torch.zeros(0, self.rec.model.cfg.vocab_size), None, t0[i], t_end[i], ctx[i])
        for batch in self.batches([lengths[i] for i in todo]):
            idx = [todo[b] for b in batch]
            for i, res in zip(idx, self._run([feats[i] for i in idx], [t0[i] for i in idx], [t_end[i] for i in idx],
                                             [ctx[i] for i in idx])):
                results[i] = res
        return results  # type: ignore[return-value]

    @torch.inference_mode()
    def _run(self, feats: list[torch.Tensor], t0: list[float], t_end: list[float],
             ctx: list[ContextGraph | None]) -> list[Result]:
        rec = self.rec
        lens = torch.tensor([f.size(0) for f in feats])
        xs = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True).to(rec.device)
        rescoring = rec.decoding.rescoring
        with rec._autocast():
            enc, logp, out_lens = rec.model.forward_with_encoder(xs, lens.to(rec.device))
        logp = logp.float().cpu()
        out_lens = out_lens.cpu().tolist()
        return [
            self._decode(logp[i, :n], enc[i, :n].float() if rescoring else None, t0[i], t_end[i], ctx[i])
            for i, n in enumerate(out_lens)
        ]

    def _decode(self, logp: torch.Tensor, enc: torch.Tensor | None, t0: float, t_end: float,
                context: ContextGraph | None = None) -> Result:
        rec = self.rec
        rescoring = rec.decoding.rescoring and enc is not None and logp.size(0) > 0
        decoder = rec.new_decoder(rescoring, context)
        decoder.advance(logp)
        nbest = decoder.nbest()
        if rescoring:
            nbest = rec.rescore(nbest, enc)
        return rec.result(nbest, t0, t_end, rescored=rescoring)
