"""Recognizer: owns the model and device; whole-file transcription and batched streaming.

No asyncio here. The server's batching engine calls `Recognizer.step(streams)` from a
worker thread with whichever streams have a chunk ready; `Stream.accept` does the same
for one stream at a time for library users.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .checkpoint import ModelBundle, ModelDirError, load_model_dir
from .config import DEFAULT_BEAM, ChunkConfig, DecodingConfig
from .decoding import Hypothesis, make_decoder
from .decoding.context import DEFAULT_BOOST, ContextGraph, HotwordLimits, parse_hotwords
from .decoding.rescore import rescore as attention_rescore
from .features import StreamingFbank, StreamingResampler, fbank, resample, to_float32
from .lm import load_lm
from .model.conformer import PositionTable, TracedBlocks, chunk_window
from .model.state import EncoderState
from .result import Result, Token, build_result, mean_confidence, shifted
from .whisper.bundle import is_whisper_dir, load_whisper_dir
from .whisper.features import WhisperFeatures
from .whisper.recognizer import WhisperRecognizer

__all__ = ["Recognizer", "Stream", "Result", "Token", "mean_confidence", "resolve_device", "resolve_precision",
           "cpu_has_native_bf16", "command_precision", "default_threads", "matmul_weights_in"]

def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but no CUDA GPU is available")
    return dev


PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matrix products run natively (Linux /proc/cpuinfo), unless
    torch's kernels are limited below AVX-512 (ATEN_CPU_CAPABILITY=avx2 or default)."""
    if os.environ.get("ATEN_CPU_CAPABILITY", "").lower() in ("default", "avx2"):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


CPU_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")  # what decides the speed


def describe_cpu() -> str:
    """The CPU's model, core count and the instruction sets that decide the model's speed,
    e.g. "AMD EPYC, 2 cores, avx2 avx512f avx512_bf16 (native bf16)"."""
    name, flags = "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and name == "unknown CPU":
                name = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    found = " ".join(f for f in CPU_FEATURES if f in flags) or "none of " + " ".join(CPU_FEATURES)
    bf16 = "native bf16" if {"avx512_bf16", "amx_bf16"} & flags else "no native bf16"
    return f"{name}, {os.cpu_count() or 1} cores, {found} ({bf16})"


def default_threads() -> int:
    """Torch threads for the model in the commands when not given: one per core but one.
    The spare core runs everything around the model (event loop, audio decoding, fbank,
    search); measured on 2 cores, one model thread served 50 streams at a third of the
    final latency of two, and batch transcription in bf16 ran 1.5x faster
    (docs/benchmarks.md)."""
    return max(1, (os.cpu_count() or 1) - 1)


def command_precision(precision: str, device: str | torch.device = "auto") -> str:
    """What `--precision auto` means for the commands (`tingxie transcribe`, `eval`,
    `serve`): bf16 on a CPU with native bf16, where it runs the model about 1.5-2x faster
    (docs/benchmarks.md), else as `resolve_precision`. The library's own "auto" stays
    fp32 on the CPU, so results do not depend on the machine unless asked."""
    if precision == "auto" and resolve_device(device).type == "cpu" and cpu_has_native_bf16():
        return "bf16"
    return precision


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """Compute dtype for autocast. "auto": bf16 (or fp16) on CUDA, fp32 on the CPU;
    "bf16" on a CPU with native bf16 runs the encoder about 2x faster than fp32
    (bench/encoder.py --precision bf16) at a log-prob difference of a few hundredths."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("fp16 is for CUDA devices; use bf16 on the CPU")
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def matmul_weights_in(model: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """`model`, or for bf16/fp16 compute a copy whose linear and convolution parameters
    are stored in `dtype`. Autocast would cast the same fp32 weights to the same values
    on every model call, since its cast cache lives only as long as one autocast context
    (about a tenth of a streaming step at batch 1 on the CPU, docs/benchmarks.md). Norms
    stay in fp32, as autocast runs them. The copy leaves the bundle's model as it was."""
    if dtype == torch.float32:
        return model
    model = copy.deepcopy(model)
    for m in model.modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d)):
            m.to(dtype)
    return model


# Padded fbank frames per full-context model call. On a CPU large batches are slower, not
# faster: activations (the subsampling convolution's most of all) outgrow the caches,
# while one utterance already makes matrix products big enough. Measured on the 11 M
# model (docs/benchmarks.md): 2000-4000 frames best, 40000 half as fast. A GPU wants
# large batches.
CPU_BATCH_FRAMES = 4000
GPU_BATCH_FRAMES = 80_000


def batch_limits(device: torch.device) -> tuple[int, int]:
    """(padded frames, utterances) per full-context model call on `device`."""
    return (GPU_BATCH_FRAMES, 256) if device.type == "cuda" else (CPU_BATCH_FRAMES, 64)


def length_batches(lengths: Sequence[int], max_frames: int, max_batch: int) -> list[list[int]]:
    """Indices grouped into batches, longest first, each within the padded-frame budget."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    out: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        # Sorted descending: the first member is the longest, so the padded size is
        # len(batch) * lengths[batch[0]].
        if cur and ((len(cur) + 1) * lengths[cur[0]] > max_frames or len(cur) >= max_batch):
            out.append(cur)
            cur = []
        cur.append(i)
    if cur:
        out.append(cur)
    return out


def precision_name(recognizer: "Recognizer") -> str:
    """The recognizer's compute precision as a `precision=` value (fp32, bf16, fp16)."""
    return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[recognizer.compute_dtype]


def _same_lm(a: dict | None, b: dict | None) -> bool:
    """Whether two models' shipped LM sections name the same ARPA file (by checksum)."""
    return a is not None and b is not None and a["source_sha256"] == b["source_sha256"]


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
        precision: str = "auto",
        final: "WhisperRecognizer | None" = None,
    ) -> None:
        self.bundle = bundle
        # A second model for full-context passes (finals, files): this recognizer's own
        # model then streams partials and endpoints only (a two-pass model directory).
        self.final = final
        self.device = resolve_device(device)
        self.compute_dtype = resolve_precision(precision, self.device)
        self.model = matmul_weights_in(bundle.model, self.compute_dtype).to(self.device).eval()
        self.decoder = bundle.decoder.to(self.device).eval() if bundle.decoder is not None else None
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
        self._check_rescoring(decoding.rescoring)
        self.lm, self.lm_weight, self.lm_bonus, tuned_beam = self._load_lm(decoding)
        self.beam_size = decoding.beam_size or tuned_beam or DEFAULT_BEAM
        # When True, `step` leaves each stream's CTC search (the costly part with an LM) to
        # the next read of its result, on the reader's thread: the server's engine thread
        # then runs only the model, and the event loop's core runs the search.
        self.defer_search = False
        self._position_table: PositionTable | None = None  # built by the first streaming step
        # Streaming steps run the blocks as traced graphs on the CPU, where the GIL held by
        # other threads (the server's event loop) slowed the eager ones (docs/benchmarks.md).
        # Not yet measured on CUDA, so eager there.
        self._blocks = TracedBlocks(self.model.encoder) if self.device.type == "cpu" else None

    def _load_lm(self, d: DecodingConfig):
        """(NgramLM or None, weight, bonus, tuned beam or None) for DecodingConfig.lm."""
        return load_lm(d, self.bundle.lm, self.tokenizer.units)

    @property
    def model_path(self) -> Path:
        """The model directory this recognizer was made from (the two-pass one, with a final model)."""
        return self.final.bundle.path if self.final is not None else self.bundle.path

    @property
    def full_pass_features(self):
        """The front end of full-context passes (`asr.batch` computes it per segment):
        Whisper's log-mel with a final model, else this model's fbank."""
        return WhisperFeatures() if self.final is not None else self.features

    @property
    def search_method(self) -> str:
        return "prefix_beam" if self.lm is not None else self.decoding.method

    def new_decoder(self, rescoring: bool = False, context: ContextGraph | None = None):
        """A CTC search for one utterance: prefix beam for rescoring, with an LM or with
        hotwords (`context`)."""
        d = self.decoding
        method = "prefix_beam" if rescoring else self.search_method
        return make_decoder(method, self.beam_size, 0, d.blank_penalty, self.lm, self.lm_weight, self.lm_bonus, context)

    def hotwords(self, value, limits: HotwordLimits = HotwordLimits(), boost: float = DEFAULT_BOOST) -> ContextGraph:
        """A context graph for hotwords given as `parse_hotwords` takes them (a list of
        phrases, a {phrase: boost} object, or lines); raises HotwordError."""
        return ContextGraph(parse_hotwords(value, self.tokenizer, limits, boost))

    @classmethod
    def from_dir(
        cls,
        path: str | Path,
        device: str | torch.device = "auto",
        decoding: DecodingConfig = DecodingConfig(),
        chunk: ChunkConfig | None = None,
        precision: str = "auto",
        final_precision: str = "auto",
        chunk_ms: int = 0,
        history_ms: int = 0,
        **kwargs,
    ) -> "Recognizer":
        """A recognizer for a model directory of either kind: Conformer-CTC, or Whisper-CTC,
        whose first-pass model streams and whose own model runs every full-context pass.
        The streaming chunk: `chunk`, else `chunk_ms`/`history_ms` (0: the model's own)."""
        dev = resolve_device(device)
        whisper = load_whisper_dir(path) if is_whisper_dir(path) else None
        if whisper is not None and whisper.first_pass is None:
            raise ModelDirError(f"{path}: a Whisper-CTC model directory needs a first_pass streaming model")
        bundle = load_model_dir(whisper.first_pass if whisper is not None else path, device="cpu")
        if chunk is None and (chunk_ms or history_ms):
            chunk = bundle.streaming_chunk(chunk_ms, history_ms)
        # With a final model, rescoring is the final model's: the streaming one never rescores.
        first = dataclasses.replace(decoding, rescoring=None) if whisper is not None else decoding
        rec = cls(bundle, dev, first, chunk, precision=precision, **kwargs)
        if whisper is not None:
            shared = rec.lm if _same_lm(bundle.lm, whisper.lm) else None
            rec.final = WhisperRecognizer(whisper, dev, decoding, final_precision, cpu_has_native_bf16(), lm=shared)
        return rec

    @property
    def name(self) -> str:
        return self.final.name if self.final is not None else self.bundle.name

    @property
    def can_rescore(self) -> bool:
        """Whether the model has an attention decoder (needed for rescoring)."""
        return self.decoder is not None

    @property
    def rescores_full_passes(self) -> bool:
        """Whether full-context passes (`transcribe`, `transcribe_many`) are rescored by
        default: the final model's decoder, or this model's with rescoring on."""
        if self.final is not None:
            return self.final.rescorer is not None
        return bool(self.decoding.rescoring)

    def _check_rescoring(self, rescoring: bool) -> None:
        if rescoring and self.decoder is None:
            raise ValueError(
                f"attention rescoring needs an attention decoder, and model {self.bundle.name!r} has none "
                "(import a WeNet model with its decoder, or turn rescoring off)"
            )

    def _autocast(self):
        if self.compute_dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.compute_dtype)

    # Largest projected-positions table, in encoder frames (164 s at 40 ms); utterances end
    # long before (the endpoint's limit is 20 s), and longer ones project their own.
    POSITION_TABLE_MAX = 4096

    def _positions(self, state: EncoderState, chunk_size: int) -> PositionTable | None:
        """A PositionTable for a step of `chunk_size` frames from `state`, grown by doubling
        (from 1024) as offsets require; None past POSITION_TABLE_MAX."""
        need = int(state.offset.max()) + chunk_size
        table = self._position_table
        if table is not None and table.size >= need:
            return table
        size = max(1024, 1 << (need - 1).bit_length())
        if size > self.POSITION_TABLE_MAX:
            return None
        with torch.no_grad(), self._autocast():
            self._position_table = PositionTable(self.model.encoder, size)
        return self._position_table

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

    def encode(
        self,
        audio: np.ndarray | torch.Tensor,
        sample_rate: int = 16000,
        chunk_size: int | None = None,
        left_chunks: int = -1,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """As `ctc_logprobs`, also returning the encoder output: (enc (frames, d) on the
        recognizer's device, logp (frames, vocab) on the CPU)."""
        return self._encode(self._features(audio, sample_rate), chunk_size, left_chunks, True)

    def _logprobs(self, feats: torch.Tensor, chunk_size: int | None, left_chunks: int) -> torch.Tensor:
        return self._encode(feats, chunk_size, left_chunks, False)[1]

    @torch.inference_mode()
    def _encode(
        self, feats: torch.Tensor, chunk_size: int | None, left_chunks: int, keep_encoder: bool
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """(encoder output (T', d) on the device or None unless keep_encoder, logp (T', vocab) on the CPU)."""
        cfg = self.model.cfg
        if feats.size(0) < self.min_frames:
            enc = torch.zeros(0, cfg.output_size, device=self.device) if keep_encoder else None
            return enc, torch.zeros(0, cfg.vocab_size)
        feats = feats.to(self.device)
        with self._autocast():
            if not chunk_size or chunk_size <= 0:
                enc, logp, _ = self.model.forward_with_encoder(
                    feats[None], torch.tensor([feats.size(0)], device=self.device)
                )
                return (enc[0].float() if keep_encoder else None), logp[0].float().cpu()
            window, stride = chunk_window(cfg, chunk_size)
            cache = -1 if left_chunks < 0 else chunk_size * left_chunks
            state = self.model.initial_state(1, self.compute_dtype)
            encs, outs = [], []
            for start in range(0, feats.size(0) - self.min_frames + 1, stride):
                x = feats[start : start + window]
                enc, logp, lens, state = self.model.forward_chunk_with_encoder(
                    x[None], torch.tensor([x.size(0)], device=self.device), state, cache,
                    self._positions(state, chunk_size), self._blocks,
                )
                n = int(lens[0])
                outs.append(logp[0, :n].float().cpu())
                if keep_encoder:
                    encs.append(enc[0, :n].float())
            return (torch.cat(encs) if keep_encoder else None), torch.cat(outs)

    def transcribe(
        self, audio: np.ndarray | torch.Tensor, sample_rate: int = 16000, rescoring: bool | None = None,
        hotwords: ContextGraph | None = None,
    ) -> Result:
        """Recognise a whole recording (mono float32 in [-1, 1] or int16); with a final
        model, that model's pass (`WhisperRecognizer.transcribe`).

        Up to `max_full_context_s` of audio is decoded with full context; longer audio is
        decoded in 2.56 s chunks with 8 chunks of history, keeping memory linear.
        rescoring: attention-rescore the result (None: as `DecodingConfig.rescoring`).
        hotwords: a context graph (`Recognizer.hotwords`) that biases the search.
        """
        if self.final is not None:
            return self.final.transcribe(audio, sample_rate, hotwords, rescoring)
        rescoring = self.decoding.rescoring if rescoring is None else rescoring
        self._check_rescoring(rescoring)
        return self._transcribe_features(self._features(audio, sample_rate), rescoring, hotwords)

    def _transcribe_features(self, feats: torch.Tensor, rescoring: bool, hotwords: ContextGraph | None = None) -> Result:
        long = feats.size(0) * self.features.frame_shift_ms / 1000 > self.max_full_context_s
        enc, logp = self._encode(feats, 64 if long else None, 8, rescoring)
        decoder = self.new_decoder(rescoring, hotwords)
        decoder.advance(logp)
        end_s = feats.size(0) * self.features.frame_shift_ms / 1000
        nbest = decoder.nbest()
        if rescoring:
            nbest = self.rescore(nbest, enc)
        return self.result(nbest, 0.0, end_s, rescored=rescoring)

    def transcribe_many(self, audios: Sequence[np.ndarray | torch.Tensor], sample_rate: int = 16000,
                        hotwords: Sequence[ContextGraph | None] | None = None,
                        rescoring: bool | None = None) -> list[Result]:
        """`transcribe` for several recordings at once: full-context passes in padded,
        length-sorted batches (`recognize_features`); each result is what `transcribe`
        gives for its audio, up to float rounding. Recordings longer than
        `max_full_context_s` are decoded one by one, as `transcribe` does them.
        hotwords: a context graph (or None) per recording; rescoring: False skips the
        attention rescoring this model would do (None: its default; True where it has none
        is an error)."""
        if self.final is not None:
            return self.final.transcribe_many(audios, sample_rate, hotwords, rescoring)
        rescoring = self.decoding.rescoring if rescoring is None else rescoring
        self._check_rescoring(rescoring)
        feats = [self._features(a, sample_rate) for a in audios]
        shift_s = self.features.frame_shift_ms / 1000
        contexts = list(hotwords) if hotwords is not None else [None] * len(feats)
        short = [i for i, f in enumerate(feats) if f.size(0) * shift_s <= self.max_full_context_s]
        results: list[Result | None] = [None] * len(feats)
        if short:
            ends = [feats[i].size(0) * shift_s for i in short]
            batch = self.recognize_features([feats[i] for i in short], [0.0] * len(short), ends,
                                            contexts=[contexts[i] for i in short], rescoring=rescoring)
            for i, r in zip(short, batch):
                results[i] = r
        for i, r in enumerate(results):
            if r is None:
                results[i] = self._transcribe_features(feats[i], rescoring, contexts[i])
        return results  # type: ignore[return-value]

    def recognize_features(
        self,
        feats: Sequence[torch.Tensor],
        t0: Sequence[float],
        t_end: Sequence[float],
        max_batch_frames: int = 0,
        max_batch: int = 0,
        contexts: Sequence[ContextGraph | None] | None = None,
        rescoring: bool | None = None,
    ) -> list[Result]:
        """Full-context results for utterances given as features (frames, mel) that
        start at t0 and end at t_end (seconds; token times are absolute). They run sorted
        by length in padded batches of at most max_batch_frames padded frames and
        max_batch utterances (0: `batch_limits` for the device); padding is masked in the
        encoder, so each result is what the utterance gives alone, up to float rounding.
        contexts: hotwords (a context graph or None) per utterance; rescoring: as in
        `transcribe_many`."""
        default_frames, default_batch = batch_limits(self.device)
        lengths = [int(f.size(0)) for f in feats]
        ctx = list(contexts) if contexts is not None else [None] * len(feats)
        results: list[Result | None] = [None] * len(feats)
        if self.final is not None:  # the final model's passes; features are its log-mel (`full_pass_features`)
            for batch in length_batches(lengths, max_batch_frames or default_frames, max_batch or default_batch):
                for i, (enc, lp) in zip(batch, self.final.encode([feats[i] for i in batch], rescoring is not False)):
                    results[i] = self.final.search(lp, t0[i], t_end[i], ctx[i], None if rescoring is False else enc)
            return results  # type: ignore[return-value]
        todo = [i for i, n in enumerate(lengths) if n >= self.min_frames]
        rescoring = self.decoding.rescoring if rescoring is None else rescoring
        for i in set(range(len(feats))) - set(todo):  # too short for one encoder frame
            results[i] = self._decode_full(torch.zeros(0, self.model.cfg.vocab_size), None, t0[i], t_end[i], ctx[i])
        batches = length_batches([lengths[i] for i in todo], max_batch_frames or default_frames,
                                 max_batch or default_batch)
        for batch in batches:
            idx = [todo[b] for b in batch]
            for i, res in zip(idx, self._run_padded([feats[i] for i in idx], [t0[i] for i in idx],
                                                    [t_end[i] for i in idx], [ctx[i] for i in idx], rescoring)):
                results[i] = res
        return results  # type: ignore[return-value]

    @torch.inference_mode()
    def _run_padded(self, feats: list[torch.Tensor], t0: list[float], t_end: list[float],
                    ctx: list[ContextGraph | None], rescoring: bool) -> list[Result]:
        lens = torch.tensor([f.size(0) for f in feats])
        xs = torch.nn.utils.rnn.pad_sequence(feats, batch_first=True).to(self.device)
        with self._autocast():
            enc, logp, out_lens = self.model.forward_with_encoder(xs, lens.to(self.device))
        logp = logp.float().cpu()
        out_lens = out_lens.cpu().tolist()
        return [
            self._decode_full(logp[i, :n], enc[i, :n].float() if rescoring else None, t0[i], t_end[i], ctx[i])
            for i, n in enumerate(out_lens)
        ]

    def _decode_full(self, logp: torch.Tensor, enc: torch.Tensor | None, t0: float, t_end: float,
                     context: ContextGraph | None = None) -> Result:
        rescoring = enc is not None and logp.size(0) > 0
        decoder = self.new_decoder(rescoring, context)
        decoder.advance(logp)
        nbest = decoder.nbest()
        if rescoring:
            nbest = self.rescore(nbest, enc)
        return self.result(nbest, t0, t_end, rescored=rescoring)

    def rescore(
        self, nbest: "Stream | Sequence[Hypothesis]", encoder_out: torch.Tensor | None = None
    ) -> list[Hypothesis]:
        """Attention rescoring (WeNet's formula, `DecodingConfig.ctc_weight` and
        `reverse_weight`) of CTC prefix-beam hypotheses, best first.

        Either a Stream created with rescoring on (its current n-best and the encoder
        output of its utterance so far), or hypotheses with the utterance's encoder
        output (T', d), e.g. from `encode`.
        """
        self._check_rescoring(True)
        if isinstance(nbest, Stream):
            if not nbest.rescoring:
                raise ValueError("this stream does not keep its encoder output; create it with rescoring=True")
            encoder_out = nbest.encoder_out
            nbest = nbest._decoder.nbest()
        if encoder_out is None:
            raise ValueError("rescoring hypotheses needs the utterance's encoder output")
        assert self.decoder is not None
        with torch.inference_mode(), self._autocast():
            return attention_rescore(
                self.decoder,
                list(nbest),
                encoder_out.to(self.device),
                self.decoding.ctc_weight,
                self.decoding.reverse_weight,
            )

    # ------------------------------------------------------------ results

    def result(self, nbest: Sequence[Hypothesis], t0: float, t_end: float, rescored: bool = False) -> Result:
        """Result from decoder hypotheses; t0 is the time of encoder frame 0 (seconds);
        rescored: the hypotheses come from `rescore` (recorded in the options)."""
        return build_result(nbest, self.tokenizer, self.frame_s, t0, t_end, self.decoding.nbest, self._options(rescored))

    def _options(self, rescored: bool) -> dict:
        d = self.decoding
        if not rescored:
            opts = {"decoding": self.search_method, "chunk_size": self.chunk.chunk_size}
            if self.lm is not None:
                opts.update(beam_size=self.beam_size, lm_weight=self.lm_weight, lm_bonus=self.lm_bonus)
            return opts
        return {
            "decoding": "attention_rescoring",
            "chunk_size": self.chunk.chunk_size,
            "beam_size": self.beam_size,
            "ctc_weight": d.ctc_weight,
            "reverse_weight": d.reverse_weight,
        }

    # ------------------------------------------------------------ streaming

    def stream(self, sample_rate: int = 16000, rescoring: bool | None = None,
               hotwords: ContextGraph | None = None, final_pass: bool = True) -> "Stream":
        """A new stream; rescoring (None: as `DecodingConfig.rescoring`) makes its finals
        attention-rescored, and makes it keep its utterance's encoder output for that;
        hotwords: a context graph (`Recognizer.hotwords`) for every utterance. With a
        final model, the stream's finals are its full-context pass over the utterance's
        audio (kept for it), unless `final_pass` is off (a caller that runs the passes
        itself, as the server's engine does, batched)."""
        return Stream(self, sample_rate, rescoring, hotwords, final_pass)

    @torch.inference_mode()
    def step(self, streams: Sequence["Stream"]) -> None:
        """Run one encoder chunk for each stream (all must be `ready()`), batched."""
        if not streams:
            return
        chunks = [s._take_chunk() for s in streams]
        lens = torch.tensor([c.size(0) for c in chunks])
        xs = torch.nn.utils.rnn.pad_sequence(chunks, batch_first=True)
        state = EncoderState.stack([s._state for s in streams]).to(self.device)  # no-op when already there
        keep = any(s.rescoring for s in streams)
        with self._autocast():
            enc, logp, out_lens, new_state = self.model.forward_chunk_with_encoder(
                xs.to(self.device), lens.to(self.device), state, self.chunk.cache_frames,
                self._positions(state, self.chunk.chunk_size), self._blocks,
            )
        logp = logp.float().cpu()
        out_lens = out_lens.cpu()
        for i, (s, st, lp, n) in enumerate(zip(streams, new_state.unstack(), logp, out_lens.tolist())):
            s._state = st
            if keep and s.rescoring:
                s._encoder_out.append(enc[i, :n].float().clone())
            if self.defer_search:
                s._pending.append(lp[:n])
            else:
                s._decoder.advance(lp[:n])
            s._on_logprobs(lp[:n])


class Stream:
    """One audio stream: resampling, fbank, encoder state and CTC search.

    `accept_waveform` only buffers and computes features; the model runs in
    `Recognizer.step` (batched over streams) or in `accept` (this stream alone).
    """

    def __init__(self, recognizer: Recognizer, sample_rate: int = 16000, rescoring: bool | None = None,
                 hotwords: ContextGraph | None = None, final_pass: bool = True) -> None:
        self.rec = recognizer
        self.hotwords = hotwords
        self._audio: list[np.ndarray] | None = [] if recognizer.final is not None and final_pass else None
        self._audio_start = 0  # 16 kHz sample index of the first kept sample
        self.sample_rate = sample_rate
        self.rescoring = recognizer.decoding.rescoring if rescoring is None else rescoring
        recognizer._check_rescoring(self.rescoring)
        self._resampler = StreamingResampler(sample_rate, recognizer.features.sample_rate)
        self._fbank = StreamingFbank(recognizer.features)
        self._buf = torch.zeros(0, recognizer.features.num_mel_bins)
        self._buf_start = 0  # absolute fbank frame index of _buf[0]
        self._input_done = False
        self._blank_run = 0  # trailing frames whose blank posterior is high (for endpointing)
        self.frames_decoded = 0
        self._new_utterance()

    def _new_utterance(self) -> None:
        self._state = EncoderState.initial(self.rec.model.cfg, 1, self.rec.device, self.rec.compute_dtype)
        self._decoder = self.rec.new_decoder(self.rescoring, self.hotwords)
        self._pending: list[torch.Tensor] = []  # log-probs not searched yet (Recognizer.defer_search)
        self._encoder_out: list[torch.Tensor] = []  # this utterance's, kept only when rescoring
        self._utt_start = self._buf_start  # fbank frame where this utterance's frame 0 starts
        self._blank_run = 0
        if self._audio:
            self._drop_audio_before(self._utt_start * self._fbank.cfg.shift)

    def _keep_audio(self, samples: torch.Tensor) -> None:
        if self._audio is not None and samples.numel():
            self._audio.append(samples.numpy().astype(np.float32, copy=True))

    def _drop_audio_before(self, sample: int) -> None:
        assert self._audio is not None
        kept = np.concatenate(self._audio) if len(self._audio) > 1 else self._audio[0]
        cut = min(max(0, sample - self._audio_start), kept.size)
        self._audio = [kept[cut:]]
        self._audio_start += cut

    def utterance_audio(self) -> np.ndarray:
        """16 kHz samples of the current utterance (kept only for a final model's pass)."""
        if self._audio is None:
            raise ValueError("this stream keeps no audio (no final model, or final_pass off)")
        self._drop_audio_before(self._utt_start * self._fbank.cfg.shift)
        return self._audio[0]

    # -- features

    def accept_waveform(self, audio: np.ndarray | torch.Tensor) -> None:
        if self._input_done:
            raise RuntimeError("this stream was finished; start a new one")
        samples = self._resampler.accept(to_float32(audio))
        self._keep_audio(samples)
        feats = self._fbank.accept(samples)
        if feats.numel():
            self._buf = torch.cat([self._buf, feats])

    def input_finished(self) -> None:
        """No more audio: flush the resampler so the tail becomes features."""
        if not self._input_done:
            tail = self._resampler.flush()
            self._keep_audio(tail)
            feats = self._fbank.accept(tail)
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
    def decoded_s(self) -> float:
        """Seconds of audio (from the stream start) whose features the encoder has consumed."""
        return self._buf_start * self.rec.features.frame_shift_ms / 1000

    def samples_until_ready(self) -> int:
        """Input samples (at this stream's rate) still needed before `ready()` turns True:
        0 when it already is or when input is finished. Lets a caller hold small pieces
        of audio back and compute features once per chunk rather than once per piece."""
        missing = self.rec.window - self._buf.size(0)
        if missing <= 0 or self._input_done:
            return 0
        fb = self._fbank
        need16 = (missing - 1) * fb.cfg.shift + fb.cfg.window - fb._buf.numel()
        rs = self._resampler
        if rs.identity:
            return max(need16, 1)
        # Output sample k lies in block k // new, which needs input up to b*orig + width + orig.
        last_block = (rs._blocks * rs.new + max(need16, 1) - 1) // rs.new
        return max(last_block * rs.orig + rs.width + rs.orig - rs._received, 1)

    def _search(self) -> None:
        """Run the CTC search over the log-probs that `step` deferred."""
        if self._pending:
            pending, self._pending = self._pending, []
            self._decoder.advance(pending[0] if len(pending) == 1 else torch.cat(pending))

    @property
    def utterance_frames(self) -> int:
        self._search()
        return self._decoder.frames_seen

    @property
    def encoder_out(self) -> torch.Tensor:
        """(frames, d) encoder output of the current utterance (kept only when rescoring)."""
        if not self.rescoring:
            raise ValueError("this stream does not keep its encoder output; create it with rescoring=True")
        if not self._encoder_out:
            return torch.zeros(0, self.rec.model.cfg.output_size, device=self.rec.device)
        if len(self._encoder_out) > 1:
            self._encoder_out = [torch.cat(self._encoder_out)]
        return self._encoder_out[0]

    def partial(self) -> Result:
        """The current CTC result (never rescored)."""
        self._search()
        t_end = self.utterance_start + self._decoder.frames_seen * self.rec.frame_s
        return self.rec.result(self._decoder.nbest(), self.utterance_start, t_end)

    def _final(self) -> Result:
        """The utterance's result: the final model's pass over its audio when there is one,
        else attention-rescored when this stream rescores, else the streaming result."""
        if self._audio is not None and self.rec.final is not None:
            return shifted(self.rec.final.transcribe(self.utterance_audio(), self.rec.features.sample_rate,
                                                     self.hotwords), self.utterance_start)
        if not self.rescoring:
            return self.partial()
        self._search()
        t_end = self.utterance_start + self._decoder.frames_seen * self.rec.frame_s
        return self.rec.result(self.rec.rescore(self), self.utterance_start, t_end, rescored=True)

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
        return self._final()

    def end_utterance(self) -> Result:
        """Endpoint inside a continuing stream: return the utterance's result and start a
        new utterance (fresh encoder and search state; features carry on)."""
        result = self._final()
        self._new_utterance()
        return result
