"""Optional voice activity detection with silero-vad, for endpointing.

`pip install silero-vad` (the wheel ships its model). A `SileroVad` follows one audio
stream: it resamples to 16 kHz, scores every 32 ms window and tracks how long the stream
has been silent at its end (`trailing_silence_s`), which `asr.endpoint.detect_endpoint`
can use instead of the CTC blank statistics. The silero model keeps recurrent state, so
each stream gets its own instance; calls must come from one thread at a time.
"""

from __future__ import annotations

import importlib.util
import warnings

import numpy as np
import torch

from .features import StreamingResampler, to_float32

__all__ = ["SileroVad", "silero_available"]

WINDOW = 512  # samples at 16 kHz per silero call (32 ms)
RATE = 16000


def silero_available() -> bool:
    return importlib.util.find_spec("silero_vad") is not None


def _load_model():
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


class SileroVad:
    """Speech/silence tracking for one stream (`threshold`: speech probability)."""

    def __init__(self, sample_rate: int, threshold: float = 0.5) -> None:
        if not 0.0 < threshold < 1.0:
            raise ValueError("VAD threshold must be within (0, 1)")
        self.threshold = threshold
        self._model = None  # loaded on first use, on the thread that feeds audio
        self._resampler = StreamingResampler(sample_rate, RATE)
        self._buf = np.zeros(0, dtype=np.float32)
        self._silent_windows = 0
        self.windows = 0
        self.speech_windows = 0

    @property
    def trailing_silence_s(self) -> float:
        return self._silent_windows * WINDOW / RATE

    @torch.inference_mode()
    def accept(self, audio: np.ndarray | torch.Tensor) -> None:
        """Feed mono samples at the stream's rate (float in [-1, 1] or int16)."""
        if self._model is None:
            self._model = _load_model()
        samples = self._resampler.accept(to_float32(audio)).numpy()
        self._buf = np.concatenate([self._buf, samples]) if self._buf.size else samples
        n = self._buf.size // WINDOW
        for i in range(n):
            window = torch.from_numpy(np.ascontiguousarray(self._buf[i * WINDOW : (i + 1) * WINDOW]))
            prob = float(self._model(window[None], RATE))
            self.windows += 1
            if prob >= self.threshold:
                self.speech_windows += 1
                self._silent_windows = 0
            else:
                self._silent_windows += 1
        self._buf = self._buf[n * WINDOW :]
