"""The batch pipeline: prepare files (decode, segment, fbank) on worker threads, pool
their utterances, recognise the pool in length-sorted batches, assemble transcripts.

The same three steps (`prepare`, `BatchEngine.recognize`, `assemble`) run on Ray in
`asr.batch.ray_runner`; this module runs them in one process. Outcomes come back in
input order; a file that fails (unreadable, no audio, anything raised while preparing
it) becomes an `Outcome` with its reason, and the run carries on.
"""

from __future__ import annotations

import collections
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Iterator

import numpy as np
import torch

from ..audio import AudioError
from ..config import ConfigError, FeatureConfig
from ..features import fbank
from ..whisper.features import WhisperFeatures
from ..recognizer import Recognizer
from .engine import BatchEngine, EngineOptions, precision_name
from .inputs import InputItem
from .media import CHANNEL_MODES, load_media
from .results import Segment, Transcript
from .vad import VadOptions, segment
from ..text.options import TextOptions

__all__ = ["BatchOptions", "Prepared", "PreparedSegment", "Outcome", "Summary", "prepare", "assemble", "run_local", "recognize_prepared"]


@dataclass(frozen=True)
class BatchOptions:
    """channels: "mix" (one transcript of the down-mix) or "split" (each channel
    recognised on its own, segments labelled with their channel). workers: threads
    preparing files ahead of the model. pool_s: audio gathered before it is sorted
    into batches (more: less padding, more memory, later first output). text:
    punctuation and ITN of segment texts (needs `formatter` in `run_local`)."""

    channels: str = "mix"
    vad: VadOptions = VadOptions()
    engine: EngineOptions = EngineOptions()
    workers: int = -1  # -1: 0 on a CPU (prepare inline), 2 with a GPU
    pool_s: float = 600.0
    text: TextOptions = TextOptions(punctuation=False, itn=False)

    def __post_init__(self) -> None:
        if self.channels not in CHANNEL_MODES:
            raise ConfigError(f"channels must be one of {', '.join(CHANNEL_MODES)}")
        if self.workers < -1 or self.pool_s <= 0:
            raise ConfigError("workers must be -1 (auto) or >= 0, and pool_s positive")

    def record(self, recognizer: Recognizer) -> dict[str, Any]:
        """The options a transcript records (model, decoding, segmentation)."""
        v = self.vad
        return {
            "model": recognizer.name,
            "decoding": recognizer._options(recognizer.decoding.rescoring)["decoding"],
            "channels": self.channels,
            "vad": v.resolved_method(),
            "vad_only_long": v.only_long,
            "max_segment_s": v.max_segment_s,
            "precision": precision_name(recognizer),
            "punctuation": self.text.punctuation,
            "itn": self.text.itn,
        }


@dataclass
class PreparedSegment:
    channel: int | None
    start: float  # seconds
    end: float
    feats: torch.Tensor  # (frames, mel)
    keep: tuple[float | None, float | None] = (None, None)  # `Region.keep_s`: a piece of longer speech


@dataclass
class Prepared:
    item: InputItem
    duration: float = 0.0
    channels: int = 1
    segments: list[PreparedSegment] = field(default_factory=list)
    error: str | None = None
    internal: bool = False  # the error is unexpected (a bug), not a problem of the input


@dataclass(frozen=True)
class Outcome:
    item: InputItem
    transcript: Transcript | None
    error: str | None = None

    @property
    def audio_s(self) -> float:
        return self.transcript.duration if self.transcript else 0.0


def compute_features(samples: torch.Tensor, features: FeatureConfig | WhisperFeatures) -> torch.Tensor:
    """(frames, mel) features of 16 kHz samples for the model that runs full-context passes."""
    return features.compute(samples) if isinstance(features, WhisperFeatures) else fbank(samples, features)


def prepare(item: InputItem, options: BatchOptions, features: FeatureConfig | WhisperFeatures,
            label: str | None = None) -> Prepared:
    """Decode, segment and compute fbank for one input; failures become `error`
    (naming the input as `label`, default its path)."""
    if item.error:
        return Prepared(item, error=item.error)
    try:
        media = load_media(item.path, options.channels, name=label or item.path)
        rows = [np.ascontiguousarray(r) for r in media.samples]
        regions = segment(rows, options.vad)
        split = options.channels == "split"
        segs = []
        for c, (row, regs) in enumerate(zip(rows, regions)):
            for r in regs:
                feats = compute_features(torch.from_numpy(row[r.start : r.end]), features)
                segs.append(PreparedSegment(c if split else None, r.start_s, r.end_s, feats, r.keep_s))
        return Prepared(item, media.duration, len(rows), segs)
    except AudioError as e:
        return Prepared(item, error=str(e))
    except Exception as e:  # noqa: BLE001 (one bad file must not stop a long run)
        return Prepared(item, error=f"{label or item.path}: {type(e).__name__}: {e}", internal=True)


def assemble(p: Prepared, segments: list[Segment], options: dict[str, Any]) -> Transcript:
    segs = sorted((s for s in segments if s.text), key=lambda s: (s.start, s.channel or 0))
    return Transcript(p.item.id, p.item.path, p.duration, tuple(segs), p.channels, options)


def recognize_prepared(engine: BatchEngine, files: list[Prepared], options: dict[str, Any], formatter: Any = None,
                       text: TextOptions = TextOptions(False, False), hotwords: Any = None) -> list[Outcome]:
    """Recognise every utterance of `files` in one length-sorted set of batches.
    formatter (`asr.text.format.Formatter`) and text: display text of each segment;
    hotwords: a context graph for every utterance."""
    flat = [(k, s) for k, p in enumerate(files) for s in p.segments]
    frame_s = engine.rec.features.frame_shift_ms / 1000
    results = engine.recognize(
        [s.feats for _, s in flat], [s.start for _, s in flat], [s.start + s.feats.size(0) * frame_s for _, s in flat],
        [hotwords] * len(flat) if hotwords is not None else None,
    )
    per_file: list[list[Segment]] = [[] for _ in files]
    decode = engine.rec.tokenizer.decode
    for (k, s), res in zip(flat, results):
        seg = Segment.from_result(res, s.start, s.end, s.channel, s.keep, decode)
        if formatter is not None and (text.punctuation or text.itn):
            seg = seg.formatted(formatter, text)
        per_file[k].append(seg)
    out = []
    for p, segs in zip(files, per_file):
        if p.error:
            out.append(Outcome(p.item, None, p.error))
        else:
            out.append(Outcome(p.item, assemble(p, segs, options)))
    return out


def run_local(
    items: Iterable[InputItem], recognizer: Recognizer, options: BatchOptions = BatchOptions(),
    formatter: Any = None, hotwords: Any = None,
) -> Iterator[Outcome]:
    """Transcribe `items` in this process; outcomes in input order. formatter: display
    text as `options.text` asks; hotwords: a context graph for every utterance."""
    engine = BatchEngine(recognizer, options.engine)
    record = options.record(recognizer)
    workers = options.workers if options.workers >= 0 else (2 if recognizer.device.type == "cuda" else 0)
    pool: list[Prepared] = []
    pool_s = 0.0
    for p in _prepared(items, options, recognizer.full_pass_features, workers):
        pool.append(p)
        pool_s += p.duration
        if pool_s >= options.pool_s:
            yield from recognize_prepared(engine, pool, record, formatter, options.text, hotwords)
            pool, pool_s = [], 0.0
    if pool:
        yield from recognize_prepared(engine, pool, record, formatter, options.text, hotwords)


def _prepared(items: Iterable[InputItem], options: BatchOptions, features: FeatureConfig | WhisperFeatures,
              workers: int) -> Iterator[Prepared]:
    """Prepared inputs in order: inline (workers 0), or on threads running ahead.

    Inline is the default on a CPU: the model already uses every core, and a thread
    preparing files beside it makes the model's OpenMP threads wait for a core (their
    active spinning then costs more than the overlap gains). With a GPU the CPU is free
    while the model runs, and threads keep the GPU fed."""
    if workers == 0:
        for item in items:
            yield prepare(item, options, features)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="tingxie-prepare") as ex:
        queue: collections.deque[Future[Prepared]] = collections.deque()
        it = iter(items)
        exhausted = False
        while True:
            while not exhausted and len(queue) < 2 * workers + 1:
                item = next(it, None)
                if item is None:
                    exhausted = True
                else:
                    queue.append(ex.submit(prepare, item, options, features))
            if not queue:
                return
            yield queue.popleft().result()


@dataclass
class Summary:
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    audio_s: float = 0.0
    started: float = field(default_factory=time.perf_counter)
    wall_s: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)

    def add(self, outcome: Outcome) -> None:
        if outcome.error:
            self.failed += 1
            self.failures.append((outcome.item.id, outcome.error))
        else:
            self.ok += 1
            self.audio_s += outcome.audio_s
        self.wall_s = time.perf_counter() - self.started

    @property
    def speed(self) -> float:
        return self.audio_s / self.wall_s if self.wall_s > 0 else 0.0

    def line(self) -> str:
        skipped = f", {self.skipped} skipped (output exists)" if self.skipped else ""
        return (
            f"files: {self.ok} ok, {self.failed} failed{skipped}; audio {self.audio_s / 3600:.3f} h; "
            f"wall {self.wall_s:.1f} s; speed {self.speed:.1f}x real time"
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("started")
        d["speed"] = round(self.speed, 2)
        d["failures"] = [{"id": i, "error": e} for i, e in self.failures]
        return d
