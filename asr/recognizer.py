"""Recognizer: owns the model and device; whole-file transcription and batched streaming.

No asyncio here. The server's batching engine calls `Recognizer.step(streams)` from a
worker thread with whichever streams have a chunk ready; `Stream.accept` does the same
for one stream at a time for library users.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .checkpoint import ModelBundle, load_model_dir
from .config import ChunkConfig, DecodingConfig
from .decoding import Hypothesis, make_decoder
from .features import StreamingFbank, StreamingResampler, fbank, resample, to_float32
from .model.conformer import chunk_window
from .model.state import EncoderState

__all__ = ["Recognizer", "Stream", "Result", "Token", "resolve_device"]

# Token end times: a CTC peak marks a token's onset; without alignment of the token's
# extent we end it at the next onset, at most this long after its own.
MAX_TOKEN_MS = 400


@dataclass(frozen=True)
class Token:
    text: str
    start: float  # seconds from the stream (or file) start
    end: float
    confidence: float
    id: int


@dataclass(frozen=True)
class Result:
    """A recognition result; times in seconds from the start of the audio."""

    text: str
    tokens: tuple[Token, ...]
    start: float
    end: float
    confidence: float
    nbest: tuple[tuple[str, float], ...] = ()
    options: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "text": self.text,
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "confidence": round(self.confidence, 4),
            "tokens": [
                {"text": t.text, "start": round(t.start, 3), "end": round(t.end, 3), "confidence": round(t.confidence, 4)}
                for t in self.tokens
            ],
        }


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but no CUDA GPU is available")
    return dev


class Recognizer:
    """Conformer-CTC recognizer for one model directory."""

    def __init__(
        self,
        bundle: ModelBundle,
        device: str | torch.device = "auto",
        decoding: DecodingConfig = DecodingConfig(),
        chunk: ChunkConfig | None = None,
        max_full_context_s: float = 60.0,
        blank_threshold: float = 0.8,
    ) -> None:
        self.bundle = bundle
        self.device = resolve_device(device)
        self.model = bundle.model.to(self.device).eval()
        self.tokenizer = bundle.tokenizer
        self.features = bundle.features
        self.decoding = decoding
        self.chunk = chunk or bundle.chunk
        self.max_full_context_s = max_full_context_s
        self.blank_threshold = blank_threshold  # a frame is silence when P(blank) exceeds it
        cfg = self.model.cfg
        self.frame_s = cfg.subsampling_rate * self.features.frame_shift_ms / 1000.0
        self.window, self.stride = chunk_window(cfg, self.chunk.chunk_size)
        self.min_frames = cfg.right_context + 1  # fbank frames that give one encoder frame

    @classmethod
    def from_dir(
        cls,
        path: str | Path,
        device: str | torch.device = "auto",
        decoding: DecodingConfig = DecodingConfig(),
        chunk: ChunkConfig | None = None,
    ) -> "Recognizer":
        dev = resolve_device(device)
        return cls(load_model_dir(path, device="cpu"), dev, decoding, chunk)

    @property
    def name(self) -> str:
        return self.bundle.name

    def _autocast(self):
        if self.device.type == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            return torch.autocast("cuda", dtype=dtype)
        return contextlib.nullcontext()

    # ------------------------------------------------------------ whole audio

    def _features(self, audio: np.ndarray | torch.Tensor, sample_rate: int) -> torch.Tensor:
        samples = to_float32(audio)
        if sample_rate != self.features.sample_rate:
            samples = resample(samples, sample_rate, self.features.sample_rate)
        return fbank(samples, self.features)

    def ctc_logprobs(
        self,
        audio: np.ndarray | torch.Tensor,
        sample_rate: int = 16000,
        chunk_size: int | None = None,
        left_chunks: int = -1,
    ) -> torch.Tensor:
        """(frames, vocab) CTC log-probs: full context, or streamed chunk by chunk with
        caches (chunk_size encoder frames, left_chunks of attention history)."""
        feats = self._features(audio, sample_rate)
        return self._logprobs(feats, chunk_size, left_chunks)

    @torch.inference_mode()
    def _logprobs(self, feats: torch.Tensor, chunk_size: int | None, left_chunks: int) -> torch.Tensor:
        if feats.size(0) < self.min_frames:
            return torch.zeros(0, self.model.cfg.vocab_size)
        feats = feats.to(self.device)
        with self._autocast():
            if not chunk_size or chunk_size <= 0:
                logp, _ = self.model(feats[None], torch.tensor([feats.size(0)], device=self.device))
                return logp[0].float().cpu()
            window, stride = chunk_window(self.model.cfg, chunk_size)
            cache = -1 if left_chunks < 0 else chunk_size * left_chunks
            state = self.model.initial_state(1)
            outs = []
            for start in range(0, feats.size(0) - self.min_frames + 1, stride):
                x = feats[start : start + window]
                logp, lens, state = self.model.forward_chunk(
                    x[None], torch.tensor([x.size(0)], device=self.device), state, cache
                )
                outs.append(logp[0, : int(lens[0])].float().cpu())
            return torch.cat(outs)

    def transcribe(self, audio: np.ndarray | torch.Tensor, sample_rate: int = 16000) -> Result:
        """Recognise a whole recording (mono float32 in [-1, 1] or int16).

        Up to `max_full_context_s` of audio is decoded with full context; longer audio is
        decoded in 2.56 s chunks with 8 chunks of history, keeping memory linear.
        """
        feats = self._features(audio, sample_rate)
        long = feats.size(0) * self.features.frame_shift_ms / 1000 > self.max_full_context_s
        logp = self._logprobs(feats, 64 if long else None, 8)
        decoder = make_decoder(self.decoding.method, self.decoding.beam_size, 0, self.decoding.blank_penalty)
        decoder.advance(logp)
        end_s = feats.size(0) * self.features.frame_shift_ms / 1000
        return self.result(decoder.nbest(), 0.0, end_s)

    # ------------------------------------------------------------ results

    def result(self, nbest: Sequence[Hypothesis], t0: float, t_end: float) -> Result:
        """Result from decoder hypotheses; t0 is the time of encoder frame 0 (seconds)."""
        nbest = list(nbest)[: self.decoding.nbest]
        best = nbest[0]
        tokens = []
        for i, (tok, frame, conf) in enumerate(zip(best.tokens, best.frames, best.confidences)):
            start = t0 + frame * self.frame_s
            nxt = t0 + best.frames[i + 1] * self.frame_s if i + 1 < len(best.frames) else t_end
            end = max(start + self.frame_s, min(nxt, start + MAX_TOKEN_MS / 1000))
            tokens.append(Token(self.tokenizer.piece_text(tok), start, end, conf, tok))
        conf = math.exp(sum(math.log(max(t.confidence, 1e-10)) for t in tokens) / len(tokens)) if tokens else 0.0
        start = tokens[0].start if tokens else t0
        end = tokens[-1].end if tokens else t_end
        return Result(
            text=self.tokenizer.decode(best.tokens),
            tokens=tuple(tokens),
            start=start,
            end=end,
            confidence=conf,
            nbest=tuple((self.tokenizer.decode(h.tokens), h.score) for h in nbest),
            options={"decoding": self.decoding.method, "chunk_size": self.chunk.chunk_size},
        )

    # ------------------------------------------------------------ streaming

    def stream(self, sample_rate: int = 16000) -> "Stream":
        return Stream(self, sample_rate)

    @torch.inference_mode()
    def step(self, streams: Sequence["Stream"]) -> None:
        """Run one encoder chunk for each stream (all must be `ready()`), batched."""
        if not streams:
            return
        chunks = [s._take_chunk() for s in streams]
        lens = torch.tensor([c.size(0) for c in chunks])
        xs = torch.nn.utils.rnn.pad_sequence(chunks, batch_first=True)
        state = EncoderState.stack([s._state for s in streams]).to(self.device)
        with self._autocast():
            logp, out_lens, new_state = self.model.forward_chunk(
                xs.to(self.device), lens.to(self.device), state, self.chunk.cache_frames
            )
        logp = logp.float().cpu()
        out_lens = out_lens.cpu()
        for s, st, lp, n in zip(streams, new_state.unstack(), logp, out_lens.tolist()):
            s._state = st
            s._decoder.advance(lp[:n])
            s._on_logprobs(lp[:n])


class Stream:
    """One audio stream: resampling, fbank, encoder state and CTC search.

    `accept_waveform` only buffers and computes features; the model runs in
    `Recognizer.step` (batched over streams) or in `accept` (this stream alone).
    """

    def __init__(self, recognizer: Recognizer, sample_rate: int = 16000) -> None:
        self.rec = recognizer
        self.sample_rate = sample_rate
        self._resampler = StreamingResampler(sample_rate, recognizer.features.sample_rate)
        self._fbank = StreamingFbank(recognizer.features)
        self._buf = torch.zeros(0, recognizer.features.num_mel_bins)
        self._buf_start = 0  # absolute fbank frame index of _buf[0]
        self._input_done = False
        self._blank_run = 0  # trailing frames whose blank posterior is high (for endpointing)
        self.frames_decoded = 0
        self._new_utterance()

    def _new_utterance(self) -> None:
        self._state = EncoderState.initial(self.rec.model.cfg, 1)
        d = self.rec.decoding
        self._decoder = make_decoder(d.method, d.beam_size, 0, d.blank_penalty)
        self._utt_start = self._buf_start  # fbank frame where this utterance's frame 0 starts
        self._blank_run = 0

    # -- features

    def accept_waveform(self, audio: np.ndarray | torch.Tensor) -> None:
        if self._input_done:
            raise RuntimeError("this stream was finished; start a new one")
        samples = self._resampler.accept(to_float32(audio))
        feats = self._fbank.accept(samples)
        if feats.numel():
            self._buf = torch.cat([self._buf, feats])

    def input_finished(self) -> None:
        """No more audio: flush the resampler so the tail becomes features."""
        if not self._input_done:
            feats = self._fbank.accept(self._resampler.flush())
            if feats.numel():
                self._buf = torch.cat([self._buf, feats])
            self._input_done = True

    def ready(self) -> bool:
        n = self._buf.size(0)
        return n >= self.rec.window or (self._input_done and n >= self.rec.min_frames)

    def _take_chunk(self) -> torch.Tensor:
        chunk = self._buf[: self.rec.window]
        if self._input_done and self._buf.size(0) <= self.rec.window:
            # The last (possibly short) window: everything left is consumed.
            self._buf_start += self._buf.size(0)
            self._buf = self._buf[self._buf.size(0) :]
        else:
            self._buf = self._buf[self.rec.stride :]
            self._buf_start += self.rec.stride
        return chunk

    def _on_logprobs(self, logp: torch.Tensor) -> None:
        self.frames_decoded += logp.size(0)
        if logp.numel():
            for b in (logp[:, 0].exp() > self.rec.blank_threshold).tolist():
                self._blank_run = self._blank_run + 1 if b else 0

    # -- results

    @property
    def utterance_start(self) -> float:
        return self._utt_start * self.rec.features.frame_shift_ms / 1000

    @property
    def time(self) -> float:
        """Seconds of audio turned into features so far."""
        return (self._buf_start + self._buf.size(0)) * self.rec.features.frame_shift_ms / 1000

    @property
    def trailing_blank_s(self) -> float:
        return self._blank_run * self.rec.frame_s

    @property
    def utterance_frames(self) -> int:
        return self._decoder.frames_seen

    def partial(self) -> Result:
        t_end = self.utterance_start + self._decoder.frames_seen * self.rec.frame_s
        return self.rec.result(self._decoder.nbest(), self.utterance_start, t_end)

    def accept(self, audio: np.ndarray | torch.Tensor) -> None:
        """Feed audio and decode every complete chunk now (batch of one)."""
        self.accept_waveform(audio)
        while self.ready():
            self.rec.step([self])

    def finalize(self) -> Result:
        """End of input: decode everything left and return the final result."""
        self.input_finished()
        while self.ready():
            self.rec.step([self])
        return self.partial()

    def end_utterance(self) -> Result:
        """Endpoint inside a continuing stream: return the utterance's result and start a
        new utterance (fresh encoder and search state; features carry on)."""
        result = self.partial()
        self._new_utterance()
        return result
