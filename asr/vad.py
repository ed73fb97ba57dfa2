"""Silence trackers for endpointing, as alternatives to the CTC blank statistics.

Each follows one audio stream (`accept` samples at the stream's rate) and reports how
long the stream has been silent at its end (`trailing_silence_s`), which
`asr.endpoint.detect_endpoint` takes. Calls must come from one thread at a time.

- `SileroVad`: silero-vad (`pip install silero-vad`; the wheel ships its model), robust
  to noise; about 1 ms of CPU per 32 ms window per stream. The model keeps recurrent
  state, so each stream gets its own instance.
- `EnergyVad`: frame RMS against a level in dBFS: nearly free, right for clean audio with
  real pauses, fooled by background noise.
"""

from __future__ import annotations

import importlib.util
import warnings

import numpy as np
import torch

from .features import StreamingResampler, to_float32

__all__ = ["SileroVad", "EnergyVad", "silero_available", "load_silero_model"]

WINDOW = 512  # samples at 16 kHz per silero call (32 ms)
RATE = 16000


def silero_available() -> bool:
    return importlib.util.find_spec("silero_vad") is not None


def load_silero_model():
    """The model the silero-vad wheel ships (offline), keeping torch's thread count."""
    threads = torch.get_num_threads()
    try:
        from silero_vad import load_silero_vad  # noqa: PLC0415 (optional dependency)
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise RuntimeError("silero VAD needs the optional package: pip install silero-vad") from e
    finally:
        torch.set_num_threads(threads)  # importing silero_vad sets torch to one thread
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load's deprecation notice
        warnings.simplefilter("ignore", DeprecationWarning)  # importlib.resources.path in silero_vad
        return load_silero_vad()


class _FrameTrack:
    """Speech/silence flags of consecutive frames, to answer "how long was the stream
    silent just before time t" for any t the caller has decoded up to (the detector
    usually runs ahead of the decoder). Keeps the last `keep_s` seconds."""

    def __init__(self, frame_s: float, keep_s: float = 60.0) -> None:
        self.frame_s = frame_s
        self.keep = max(1, int(keep_s / frame_s))
        self._flags = np.zeros(0, dtype=bool)
        self._start = 0  # absolute index of _flags[0]

    @property
    def frames(self) -> int:
        return self._start + self._flags.size

    def append(self, speech: np.ndarray) -> None:
        self._flags = np.concatenate([self._flags, speech.astype(bool)])
        if self._flags.size > 2 * self.keep:
            drop = self._flags.size - self.keep
            self._flags = self._flags[drop:]
            self._start += drop

    def trailing_silence_at(self, t: float) -> float:
        """Silence (s) in the frames that end by time t (all frames if t is None)."""
        k = min(int(t / self.frame_s + 1e-9), self.frames) - self._start
        if k <= 0:
            return 0.0 if self._start == 0 else self.keep * self.frame_s
        speech = np.flatnonzero(self._flags[:k])
        if speech.size:
            return (k - 1 - speech[-1]) * self.frame_s
        return (k + (self.keep if self._start else 0)) * self.frame_s


class SileroVad:
    """Speech/silence tracking for one stream (`threshold`: speech probability)."""

    def __init__(self, sample_rate: int, threshold: float = 0.5) -> None:
        if not 0.0 < threshold < 1.0:
            raise ValueError("VAD threshold must be within (0, 1)")
        self.threshold = threshold
        self._model = None  # loaded on first use, on the thread that feeds audio
        self._resampler = StreamingResampler(sample_rate, RATE)
        self._buf = np.zeros(0, dtype=np.float32)
        self._track = _FrameTrack(WINDOW / RATE)
        self.speech_windows = 0

    @property
    def windows(self) -> int:
        return self._track.frames

    @property
    def trailing_silence_s(self) -> float:
        """Silence at the end of everything received."""
        return self._track.trailing_silence_at(self._track.frames * self._track.frame_s)

    def trailing_silence_at(self, t: float) -> float:
        """Silence just before `t` seconds into the stream."""
        return self._track.trailing_silence_at(t)

    @torch.inference_mode()
    def accept(self, audio: np.ndarray | torch.Tensor) -> None:
        """Feed mono samples at the stream's rate (float in [-1, 1] or int16)."""
        if self._model is None:
            self._model = load_silero_model()
        samples = self._resampler.accept(to_float32(audio)).numpy()
        self._buf = np.concatenate([self._buf, samples]) if self._buf.size else samples
        n = self._buf.size // WINDOW
        flags = np.zeros(n, dtype=bool)
        for i in range(n):
            window = torch.from_numpy(np.ascontiguousarray(self._buf[i * WINDOW : (i + 1) * WINDOW]))
            flags[i] = float(self._model(window[None], RATE)) >= self.threshold
        self.speech_windows += int(flags.sum())
        self._track.append(flags)
        self._buf = self._buf[n * WINDOW :]


class EnergyVad:
    """A `frame_ms` frame is speech when its RMS exceeds `threshold_db` dBFS."""

    def __init__(self, sample_rate: int, threshold_db: float = -40.0, frame_ms: float = 20.0) -> None:
        self.frame = max(1, int(round(sample_rate * frame_ms / 1000)))
        self.frame_s = self.frame / sample_rate
        self.threshold = 10 ** (threshold_db / 20)
        self._buf = np.zeros(0, dtype=np.float32)
        self._track = _FrameTrack(self.frame_s)
        self.speech_frames = 0

    @property
    def trailing_silence_s(self) -> float:
        """Silence at the end of everything received."""
        return self._track.trailing_silence_at(self._track.frames * self.frame_s)

    def trailing_silence_at(self, t: float) -> float:
        """Silence just before `t` seconds into the stream."""
        return self._track.trailing_silence_at(t)

    def accept(self, audio: np.ndarray | torch.Tensor) -> None:
        x = to_float32(audio).numpy()
        self._buf = np.concatenate([self._buf, x]) if self._buf.size else x
        n = self._buf.size // self.frame
        if not n:
            return
        frames = self._buf[: n * self.frame].reshape(n, self.frame)
        speech = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1)) > self.threshold
        self._buf = self._buf[n * self.frame :]
        self.speech_frames += int(speech.sum())
        self._track.append(speech)
