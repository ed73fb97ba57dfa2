"""Full-context recognition with a Whisper-CTC model: whole utterances and files.

Whisper's encoder reads at most 30 s at once; longer audio is cut at its quietest
moments into pieces of at most `MAX_SEGMENT_S`, each decoded alone. Utterances of a batch
are padded and their padding masked, so `transcribe_many` gives what `transcribe` gives
for each (up to float rounding).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import warnings
from typing import Sequence

import numpy as np
import torch

from ..config import DEFAULT_BEAM, DecodingConfig
from ..decoding import Hypothesis, make_decoder
from ..decoding.context import ContextGraph
from ..features import resample, to_float32
from ..lm import load_lm
from ..result import Result, Token, build_result, mean_confidence
from .bundle import WhisperBundle
from .features import SAMPLE_RATE, log_mel
from .rescore import WhisperRescorer

__all__ = ["WhisperRecognizer", "PRECISIONS", "resolve_whisper_precision", "MAX_SEGMENT_S"]

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "int8", "fp16")
MAX_SEGMENT_S = 28.0  # below the encoder's 30 s, leaving room to cut at a quiet moment
ENCODER_FRAME_S = 0.02  # Whisper encoder frames: 50 per second


def resolve_whisper_precision(precision: str, device: torch.device, native_bf16: bool) -> str:
    """"auto": fp16 on CUDA; on the CPU bf16 where it runs natively (AVX512-BF16/AMX),
    else int8 (dynamic quantisation: int8 weights, activations quantised per batch)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        if device.type == "cuda":
            return "fp16"
        return "bf16" if native_bf16 else "int8"
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("fp16 is for CUDA devices; use bf16 or int8 on the CPU")
    if precision == "int8" and device.type != "cpu":
        raise ValueError("int8 is for the CPU")
    return precision


def quiet_cuts(samples: np.ndarray, max_s: float = MAX_SEGMENT_S, search_s: float = 6.0) -> list[tuple[int, int]]:
    """(start, end) sample ranges of at most max_s each, cut at the quietest 100 ms in the
    last `search_s` seconds before each limit."""
    n, limit, hop = samples.size, int(max_s * SAMPLE_RATE), SAMPLE_RATE // 10
    cuts, start = [], 0
    while n - start > limit:
        lo, hi = start + limit - int(search_s * SAMPLE_RATE), start + limit
        frames = samples[lo:hi][: (hi - lo) // hop * hop].reshape(-1, hop)
        cut = lo + int(np.argmin((frames.astype(np.float64) ** 2).sum(axis=1))) * hop + hop // 2
        cuts.append((start, cut))
        start = cut
    cuts.append((start, n))
    return cuts


class WhisperRecognizer:
    """Whisper-CTC recognizer: full-context CTC log-probs, prefix-beam search with the
    model's n-gram LM, results with token times and confidences."""

    def __init__(
        self,
        bundle: WhisperBundle,
        device: torch.device,
        decoding: DecodingConfig = DecodingConfig(),
        precision: str = "auto",
        native_bf16: bool = False,
        lm=None,
    ) -> None:
        self.bundle = bundle
        self.device = device
        self.decoding = decoding
        self.tokenizer = bundle.tokenizer
        self.frame_s = ENCODER_FRAME_S * bundle.model.head.cfg.stride  # seconds per CTC frame
        self.precision = resolve_whisper_precision(precision, device, native_bf16)
        self.model = self._prepare(bundle.model)
        self.rescorer = self._rescorer(decoding.rescoring)
        self.lm, self.lm_weight, self.lm_bonus, beam = self._lm(decoding, lm)
        self.beam_size = decoding.beam_size or beam or DEFAULT_BEAM
        if self.rescorer is not None:  # the n-best to rescore comes from the beam
            self.beam_size = max(self.beam_size, self.rescorer.cfg.nbest)

    def _rescorer(self, rescoring: bool | None) -> WhisperRescorer | None:
        """The model's rescorer, its decoder at this recognizer's precision; None when
        rescoring is off (False) or the model ships none (None asks for the model's default)."""
        r = self.bundle.rescorer
        if rescoring and r is None:
            raise ValueError(f"model {self.bundle.name!r} ships no decoder to rescore with (turn rescoring off)")
        if rescoring is False or r is None:
            return None
        return r.with_decoder(self._prepare(r.decoder))

    def _prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        model = copy.deepcopy(model).eval()
        if self.precision == "int8":
            # Linear layers hold nearly all the arithmetic; convolutions stay fp32.
            with warnings_off():
                return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[self.precision]
        for m in model.modules():
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv1d)):
                m.to(dtype)
        return model.to(self.device)

    def _lm(self, d: DecodingConfig, lm):
        """(LM, weight, bonus, tuned beam) from DecodingConfig.lm: "auto" uses the model's
        own; `lm` is that LM already loaded (by the first-pass model, same file), shared."""
        if lm is not None and d.lm == "auto" and self.bundle.lm is not None:
            s = self.bundle.lm
            return (lm, s["weight"] if d.lm_weight is None else d.lm_weight,
                    s["bonus"] if d.lm_bonus is None else d.lm_bonus, s.get("beam"))
        return load_lm(d, self.bundle.lm, self.tokenizer.units)

    @property
    def name(self) -> str:
        return self.bundle.name

    def _cast(self):
        if self.precision in ("bf16", "fp16"):
            dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
            return torch.autocast(self.device.type, dtype=dtype)
        return contextlib.nullcontext()

    # ------------------------------------------------------------ model

    @torch.inference_mode()
    def encode(self, mels: Sequence[torch.Tensor], rescoring: bool = True
               ) -> list[tuple[torch.Tensor | None, torch.Tensor]]:
        """(encoder output (T, d) on the device, kept only for rescoring, else None; CTC
        log-probs (frames, vocab) on the CPU) for each log-mel (T, 80), one padded batch;
        `rescoring` False: no encoder output is needed (a head with its own top encoder
        layers then skips the pretrained ones)."""
        if not mels:
            return []
        lens = torch.tensor([m.size(0) for m in mels])
        x = torch.nn.utils.rnn.pad_sequence(list(mels), batch_first=True).to(self.device)
        memory = rescoring and self.rescorer is not None
        with self._cast():
            enc, logp, out_lens = self.model(x, lens.to(self.device), memory=memory)
        logp = logp.float().cpu()
        enc_lens = self.model.encoder.output_lengths(lens)
        return [(enc[i, : int(e)] if memory else None, logp[i, : int(n)])
                for i, (e, n) in enumerate(zip(enc_lens, out_lens.cpu()))]

    # ------------------------------------------------------------ results

    def _options(self, rescored: bool = False) -> dict:
        method = "prefix_beam" if self.lm is not None or self.rescorer is not None else self.decoding.method
        opts = {"decoding": "attention_rescoring" if rescored else method, "model": self.name}
        if self.lm is not None or self.rescorer is not None:
            opts.update(beam_size=self.beam_size)
        if self.lm is not None:
            opts.update(lm_weight=self.lm_weight, lm_bonus=self.lm_bonus)
        if rescored:
            opts.update(ctc_weight=self.rescorer.cfg.ctc_weight, rescore_nbest=self.rescorer.cfg.nbest)
        return opts

    def nbest(self, logp: torch.Tensor, context: ContextGraph | None = None) -> list[Hypothesis]:
        """The CTC search's hypotheses, best first; `context`: hotwords (a context graph
        over the same units) biasing the search."""
        d = self.decoding
        method = "prefix_beam" if self.lm is not None or context is not None or self.rescorer else d.method
        search = make_decoder(method, self.beam_size, 0, d.blank_penalty, self.lm, self.lm_weight, self.lm_bonus,
                              context)
        search.advance(logp)
        return list(search.nbest())

    def search(self, logp: torch.Tensor, t0: float, t_end: float, context: ContextGraph | None = None,
               encoder_out: torch.Tensor | None = None) -> Result:
        """The result of CTC log-probs of audio from t0 to t_end (seconds), rescored by
        Whisper's decoder when this recognizer rescores and `encoder_out` is given."""
        hyps = self.nbest(logp, context)
        rescored = self.rescorer is not None and encoder_out is not None
        if rescored:
            with self._cast():
                hyps = self.rescorer.rescore(hyps, [self.tokenizer.decode(h.tokens) for h in hyps], encoder_out)
        return build_result(hyps, self.tokenizer, self.frame_s, t0, t_end, self.decoding.nbest,
                            self._options(rescored))

    def _to_16k(self, audio: np.ndarray | torch.Tensor, sample_rate: int) -> np.ndarray:
        x = to_float32(audio)
        if sample_rate != SAMPLE_RATE:
            x = resample(x, sample_rate, SAMPLE_RATE)
        return np.ascontiguousarray(np.asarray(x, dtype=np.float32).reshape(-1))

    def transcribe(self, audio: np.ndarray | torch.Tensor, sample_rate: int = 16000,
                   hotwords: ContextGraph | None = None, rescoring: bool | None = None) -> Result:
        """Recognise a whole recording (mono float32 in [-1, 1] or int16), any length."""
        return self.transcribe_many([audio], sample_rate, [hotwords], rescoring)[0]

    def transcribe_many(self, audios: Sequence[np.ndarray | torch.Tensor], sample_rate: int = 16000,
                        hotwords: Sequence[ContextGraph | None] | None = None,
                        rescoring: bool | None = None) -> list[Result]:
        """`transcribe` of several recordings, their pieces encoded in length-sorted
        batches; hotwords: a context graph (or None) per recording; rescoring: False
        skips this recognizer's rescoring for these (None: as configured)."""
        if rescoring and self.rescorer is None:
            raise ValueError(f"model {self.name!r} is not set up to rescore (no decoder, or rescoring off)")
        contexts = list(hotwords) if hotwords is not None else [None] * len(audios)
        pieces: list[tuple[int, int, int, np.ndarray]] = []  # (recording, start, end, samples)
        ends = []
        for k, audio in enumerate(audios):
            x = self._to_16k(audio, sample_rate)
            ends.append(x.size / SAMPLE_RATE)
            pieces += [(k, a, b, x[a:b]) for a, b in quiet_cuts(x)]
        mels = [log_mel(p[3]) for p in pieces]
        order = sorted(range(len(pieces)), key=lambda i: mels[i].size(0))
        found: list[Result | None] = [None] * len(pieces)
        budget = 30 * 100 * 8  # mel frames per batch: 8 pieces of 30 s
        batch: list[int] = []
        for i in order + [None]:
            if i is None or (batch and mels[i].size(0) * (len(batch) + 1) > budget):
                for j, (enc, lp) in zip(batch, self.encode([mels[j] for j in batch], rescoring is not False)):
                    k, a, b, _ = pieces[j]
                    found[j] = self.search(lp, a / SAMPLE_RATE, b / SAMPLE_RATE, contexts[k],
                                           None if rescoring is False else enc)
                batch = []
            if i is not None:
                batch.append(i)
        parts: list[list[Result]] = [[] for _ in audios]
        for (k, _, _, _), r in zip(pieces, found):
            parts[k].append(r)
        return [self._join(p, end) for p, end in zip(parts, ends)]

    def _join(self, parts: list[Result], end: float) -> Result:
        """One result of a recording's consecutive pieces."""
        if len(parts) == 1:
            return parts[0]
        tokens: tuple[Token, ...] = tuple(t for p in parts for t in p.tokens)
        return Result(
            text=self.tokenizer.decode([t.id for t in tokens]),
            tokens=tokens,
            start=tokens[0].start if tokens else 0.0,
            end=tokens[-1].end if tokens else end,
            confidence=mean_confidence(tokens),
            options=parts[0].options,
        )


@contextlib.contextmanager
def warnings_off():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield
