"""Segmenting long audio into utterances by voice activity.

Speech probabilities come from silero-vad (the `silero-vad` wheel ships a TorchScript
model that runs on torch alone; no onnxruntime needed) or, when it is not installed, from
a frame-energy detector. One pure function (`speech_regions`) turns either into
utterances: hysteresis on the probabilities, short blips dropped, padding, and regions
longer than `max_segment_s` split at their least speech-like point.

Silero is recurrent, so one file is a long sequential chain of 32 ms steps. To use a
batch dimension anyway, the audio is cut into pieces of `piece_s` that run side by side,
each started `warmup_s` early (those outputs are dropped) so that its recurrent state
has settled by the piece's first window.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np
import torch

from ..config import ConfigError
from ..vad import load_silero_model, silero_available

__all__ = ["VadOptions", "Region", "speech_probs", "speech_regions", "segment", "silero_available", "VAD_METHODS"]

RATE = 16000
WINDOW = 512  # samples per silero step at 16 kHz (32 ms)
WINDOW_S = WINDOW / RATE
VAD_METHODS = ("auto", "silero", "energy", "off")


@dataclass(frozen=True)
class VadOptions:
    """How long audio is cut into utterances.

    method: auto (silero-vad when installed, else energy), silero, energy, or off (fixed
    windows of at most max_segment_s, cut at the quietest point).
    only_long: audio no longer than max_segment_s is recognised whole, without VAD
    (the same result as `Recognizer.transcribe`); False segments every file.
    """

    method: str = "auto"
    only_long: bool = True
    threshold: float = 0.5  # speech starts where P(speech) >= threshold
    neg_threshold: float | None = None  # speech ends below this (default threshold - 0.15)
    min_speech_ms: int = 250  # shorter regions are dropped
    # A pause at least this long ends an utterance. 300 ms cut 19 of 224 read sentences in two
    # (500 ms: 6), and each half loses the context the other gives the model and the LM.
    min_silence_ms: int = 500
    # Added on both sides (never across the middle of a pause). Models read an utterance worse
    # without the ~0.5 s of lead-in that training clips start with, in every word of it, not
    # only the first (docs/batch.md#segmentation-vad).
    speech_pad_ms: int = 500
    max_segment_s: float = 20.0
    piece_s: float = 30.0  # silero batching: audio per batch row
    warmup_s: float = 1.0  # silero batching: audio each row runs before its piece

    def __post_init__(self) -> None:
        if self.method not in VAD_METHODS:
            raise ConfigError(f"VAD method must be one of {', '.join(VAD_METHODS)}, got {self.method!r}")
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError("VAD threshold must be within (0, 1)")
        if self.neg_threshold is not None and not 0.0 < self.neg_threshold <= self.threshold:
            raise ConfigError("VAD neg_threshold must be within (0, threshold]")
        if self.max_segment_s < 1.0:
            raise ConfigError("max_segment_s must be at least 1 s")
        for name in ("min_speech_ms", "min_silence_ms", "speech_pad_ms"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0")
        if self.piece_s < 1.0 or self.warmup_s < 0:
            raise ConfigError("piece_s must be >= 1 and warmup_s >= 0")

    def resolved_method(self) -> str:
        if self.method == "auto":
            return "silero" if silero_available() else "energy"
        if self.method == "silero" and not silero_available():
            raise ConfigError("--vad silero needs the package: pip install silero-vad")
        return self.method


@dataclass(frozen=True)
class Region:
    """An utterance: samples [start, end) at 16 kHz are recognised. A piece of a region
    that was too long overlaps its neighbours by the padding, so the model has context
    on both sides of the cut; only tokens starting within [keep_start, keep_end) belong
    to it (None: the region's own bound)."""

    start: int
    end: int
    keep_start: int | None = None
    keep_end: int | None = None

    @property
    def start_s(self) -> float:
        return self.start / RATE

    @property
    def end_s(self) -> float:
        return self.end / RATE

    @property
    def keep_s(self) -> tuple[float | None, float | None]:
        """The kept span's bounds in seconds where they differ from the region's."""
        return (None if self.keep_start is None else self.keep_start / RATE,
                None if self.keep_end is None else self.keep_end / RATE)


# ---------------------------------------------------------------- probabilities

_local = threading.local()  # one silero model per thread: it keeps recurrent state


def _silero_model():
    model = getattr(_local, "silero", None)
    if model is None:
        model = _local.silero = load_silero_model()
    return model


@torch.inference_mode()
def _silero_probs(channels: list[np.ndarray], opts: VadOptions) -> list[np.ndarray]:
    """P(speech) per 32 ms window for each 16 kHz signal, pieces of all of them batched."""
    piece = max(1, round(opts.piece_s / WINDOW_S))
    warm = round(opts.warmup_s / WINDOW_S)
    rows, owners = [], []
    for c, x in enumerate(channels):
        n_win = math.ceil(x.size / WINDOW)
        padded = np.zeros((warm + n_win + piece) * WINDOW, dtype=np.float32)
        padded[warm * WINDOW : warm * WINDOW + x.size] = x
        for p in range(math.ceil(n_win / piece)):
            start = p * piece * WINDOW  # in `padded`, which starts `warm` windows early
            rows.append(padded[start : start + (warm + piece) * WINDOW])
            owners.append((c, p, n_win))
    if not rows:
        return [np.zeros(0, dtype=np.float32) for _ in channels]
    batch = torch.from_numpy(np.stack(rows)).view(len(rows), warm + piece, WINDOW)
    model = _silero_model()
    model.reset_states()
    out = torch.empty(len(rows), warm + piece)
    for t in range(warm + piece):
        out[:, t] = model(batch[:, t].contiguous(), RATE).reshape(-1)
    model.reset_states()
    probs = [np.zeros(math.ceil(x.size / WINDOW), dtype=np.float32) for x in channels]
    for row, (c, p, n_win) in zip(out[:, warm:].numpy(), owners):
        seg = probs[c][p * piece : min((p + 1) * piece, n_win)]
        seg[:] = row[: seg.size]
    return probs


def _energy_probs(x: np.ndarray) -> np.ndarray:
    """A pseudo-probability of speech per 32 ms window from its energy above the noise
    floor (10th percentile of the file): 0 at +6 dB, 0.5 at +12 dB, 1 at +18 dB."""
    n_win = math.ceil(x.size / WINDOW)
    frames = np.zeros(n_win * WINDOW, dtype=np.float32)
    frames[: x.size] = x
    power = (frames.reshape(n_win, WINDOW).astype(np.float64) ** 2).mean(axis=1)
    db = 10 * np.log10(power + 1e-10)  # digital silence at -100 dB
    floor = max(np.percentile(db, 10), -75.0)
    return np.clip((db - floor - 6.0) / 12.0, 0.0, 1.0).astype(np.float32)


def speech_probs(channels: list[np.ndarray], method: str, opts: VadOptions) -> list[np.ndarray]:
    """P(speech) per 32 ms window for each mono 16 kHz float32 signal."""
    if method == "silero":
        return _silero_probs(channels, opts)
    if method == "energy":
        return [_energy_probs(x) for x in channels]
    raise ValueError(f"no speech probabilities for VAD method {method!r}")


# ---------------------------------------------------------------- regions


def _hysteresis(probs: np.ndarray, opts: VadOptions) -> list[tuple[int, int]]:
    """Speech runs [start, end) in windows: enter at >= threshold, leave after
    min_silence of windows below neg_threshold."""
    neg = opts.neg_threshold if opts.neg_threshold is not None else max(opts.threshold - 0.15, 0.01)
    min_sil = max(1, round(opts.min_silence_ms / 1000 / WINDOW_S))
    runs: list[tuple[int, int]] = []
    start = None
    silent_from = None
    for i, p in enumerate(probs.tolist()):
        if start is None:
            if p >= opts.threshold:
                start, silent_from = i, None
            continue
        if p >= neg:
            silent_from = None
        elif silent_from is None:
            silent_from = i
        if silent_from is not None and i + 1 - silent_from >= min_sil:
            runs.append((start, silent_from))
            start = silent_from = None
    if start is not None:
        runs.append((start, silent_from if silent_from is not None else probs.size))
    return runs


def _split_long(start: int, end: int, probs: np.ndarray, max_win: int) -> list[tuple[int, int]]:
    """Cut [start, end) (windows) into parts of at most max_win, each cut at the least
    speech-like window (smoothed over 160 ms) of the second half of the allowed span."""
    parts = []
    smooth = np.convolve(probs, np.ones(5) / 5, mode="same") if probs.size >= 5 else probs
    while end - start > max_win:
        lo, hi = start + max_win // 2, start + max_win
        span = smooth[lo:hi]
        cut = lo + int(np.flatnonzero(span == span.min())[-1]) if span.size else hi
        cut = max(cut, start + 1)
        parts.append((start, cut))
        start = cut
    parts.append((start, end))
    return parts


def speech_regions(probs: np.ndarray, num_samples: int, opts: VadOptions) -> list[Region]:
    """Utterances of one signal from its per-window speech probabilities."""
    min_speech = opts.min_speech_ms / 1000 / WINDOW_S
    pad = round(opts.speech_pad_ms / 1000 * RATE)
    runs = [(s, e) for s, e in _hysteresis(probs, opts) if e - s >= min_speech]
    # Longest allowed in windows, leaving room for padding on both sides.
    max_win = max(1, int((opts.max_segment_s * RATE - 2 * pad) // WINDOW))
    pieces: list[tuple[int, int, bool, bool]] = []  # (start, end, pad_left, pad_right)
    for s, e in runs:
        parts = _split_long(s, e, probs, max_win) if e - s > max_win else [(s, e)]
        for k, (a, b) in enumerate(parts):
            pieces.append((a, b, k == 0, k == len(parts) - 1))
    regions: list[Region] = []
    for i, (a, b, pad_l, pad_r) in enumerate(pieces):
        start, end = a * WINDOW, min(b * WINDOW, num_samples)
        keep_start = keep_end = None
        if pad_l:
            prev_end = pieces[i - 1][1] * WINDOW if i else 0
            start = max(start - pad, (prev_end + start) // 2 if i else 0)
        else:  # a cut inside speech: reach back into the previous piece for context
            keep_start, start = start, max(start - pad, 0)
        if pad_r:
            next_start = pieces[i + 1][0] * WINDOW if i + 1 < len(pieces) else None
            limit = num_samples if next_start is None else (end + next_start) // 2
            end = min(end + pad, limit)
        else:
            keep_end, end = end, min(end + pad, num_samples)
        if end > start:
            regions.append(Region(start, end, keep_start, keep_end))
    return regions


def _fixed_regions(x: np.ndarray, opts: VadOptions) -> list[Region]:
    """No VAD: windows of at most max_segment_s, each cut at the quietest 32 ms of its
    last half (so a cut rarely falls inside a word)."""
    n_win = math.ceil(x.size / WINDOW)
    if n_win == 0:
        return []
    power = _energy_probs(x)
    max_win = max(1, int(opts.max_segment_s * RATE // WINDOW))
    return [Region(a * WINDOW, min(b * WINDOW, x.size)) for a, b in _split_long(0, n_win, power, max_win)]


def segment(channels: list[np.ndarray], opts: VadOptions) -> list[list[Region]]:
    """Utterances of each mono 16 kHz float32 signal (one list per signal)."""
    method = opts.resolved_method()
    out: list[list[Region] | None] = [None] * len(channels)
    todo = []
    for c, x in enumerate(channels):
        if x.size == 0:
            out[c] = []
        elif opts.only_long and x.size <= opts.max_segment_s * RATE:
            out[c] = [Region(0, x.size)]
        elif method == "off":
            out[c] = _fixed_regions(x, opts)
        else:
            todo.append(c)
    if todo:
        probs = speech_probs([channels[c] for c in todo], method, opts)
        for c, p in zip(todo, probs):
            out[c] = speech_regions(p, channels[c].size, opts)
    return [r or [] for r in out]
