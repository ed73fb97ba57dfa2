"""Decoding any audio or video file to 16 kHz float32, mixed down or per channel.

PCM WAV goes through `asr.audio.read_audio` (the standard library: exact samples, the
same path as `tingxie transcribe` always took). Everything else (FLAC, MP3, AAC/M4A,
Ogg and WebM Opus, AMR, the audio track of a video, ...) is decoded with PyAV frame by
frame and resampled as it arrives, so memory holds only the 16 kHz result, never the
source-rate signal. Resampling is `asr.features`' polyphase filter, the one
`Recognizer.transcribe` uses, so a file gives the same samples here as there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch

from ..audio import AudioError, read_audio
from ..features import StreamingResampler, resample

__all__ = ["Media", "load_media", "AudioError", "CHANNEL_MODES"]

RATE = 16000
CHANNEL_MODES = ("mix", "split")


@dataclass(frozen=True)
class Media:
    """samples: (channels, n) float32 at 16 kHz; one row when mixed down."""

    samples: np.ndarray
    source_rate: int
    source_channels: int
    codec: str

    @property
    def duration(self) -> float:
        return self.samples.shape[1] / RATE


def _to_rate(rows: np.ndarray, rate: int) -> np.ndarray:
    if rate == RATE:
        return np.ascontiguousarray(rows, dtype=np.float32)
    return np.stack([resample(torch.from_numpy(np.ascontiguousarray(r)), rate, RATE).numpy() for r in rows])


def _frame_array(frame) -> np.ndarray:
    """(channels, k) float32 in [-1, 1] from one PyAV audio frame."""
    arr = frame.to_ndarray()
    n_ch = len(frame.layout.channels)
    arr = arr.reshape(n_ch, -1) if frame.format.is_planar else arr.reshape(-1, n_ch).T
    if arr.dtype.kind == "i":
        return arr.astype(np.float32) / float(np.iinfo(arr.dtype).max + 1)
    if arr.dtype.kind == "u":
        return (arr.astype(np.float32) - 128.0) / 128.0
    return arr.astype(np.float32, copy=False)


def _decode_av(source: str, name: str, mode: str) -> Media:
    resamplers: list[StreamingResampler] = []
    outs: list[list[torch.Tensor]] = []
    rate = channels = 0
    codec = "?"
    fixer = None  # converts frames whose rate or layout differs from the first frame's

    pending: list[np.ndarray] = []  # decoded frames not yet resampled (fed ~1 s at a time)

    def feed() -> None:
        if pending:
            block = np.concatenate(pending, axis=1)
            pending.clear()
            rows_in = block.mean(axis=0, keepdims=True) if mode == "mix" else block
            for r, row in enumerate(rows_in):
                outs[r].append(resamplers[r].accept(torch.from_numpy(np.ascontiguousarray(row))))

    def take(arr: np.ndarray) -> None:
        pending.append(arr)
        if sum(a.shape[1] for a in pending) >= rate:
            feed()

    try:
        with av.open(source, mode="r") as container:
            if not container.streams.audio:
                kinds = sorted({s.type for s in container.streams})
                what = f"only {', '.join(kinds)} streams" if kinds else "no streams"
                raise AudioError(f"{name}: no audio stream ({what})")
            stream = container.streams.audio[0]
            codec = stream.codec_context.name
            layout = None
            for frame in container.decode(stream):
                if not resamplers:
                    rate, layout = int(frame.sample_rate), frame.layout.name
                    channels = len(frame.layout.channels)
                    rows = 1 if mode == "mix" else channels
                    resamplers = [StreamingResampler(rate, RATE) for _ in range(rows)]
                    outs = [[] for _ in range(rows)]
                if int(frame.sample_rate) == rate and len(frame.layout.channels) == channels:
                    take(_frame_array(frame))
                    continue
                if fixer is None:
                    fixer = av.AudioResampler(format="fltp", layout=layout, rate=rate)
                for f in fixer.resample(frame):
                    take(_frame_array(f))
            if fixer is not None:
                for f in fixer.resample(None):
                    take(_frame_array(f))
            feed()
    except AudioError:
        raise
    except Exception as e:  # PyAV raises many error classes for corrupt input
        reason = getattr(e, "strerror", None) or str(e).replace(source, name)
        raise AudioError(f"{name}: cannot decode audio ({reason})") from e
    if not resamplers:
        raise AudioError(f"{name}: the audio stream holds no samples")
    rows = [torch.cat(o + [rs.flush()]).numpy() for o, rs in zip(outs, resamplers)]
    samples = np.stack(rows).astype(np.float32, copy=False)
    if samples.shape[1] == 0:
        raise AudioError(f"{name}: the audio stream holds no samples")
    return Media(samples, rate, channels, codec)


def load_media(path: str | Path, mode: str = "mix", name: str | None = None) -> Media:
    """Decode an audio or video file to 16 kHz float32.

    mode: "mix" (channels averaged, one row) or "split" (one row per channel).
    name: how errors name the file (default: the path).
    Raises AudioError (missing, empty, corrupt, no audio stream) with the reason.
    """
    if mode not in CHANNEL_MODES:
        raise ValueError(f"channel mode must be one of {CHANNEL_MODES}, got {mode!r}")
    path = Path(path)
    name = name or str(path)
    if not path.is_file():
        raise AudioError(f"{name}: no such file" if not path.exists() else f"{name}: not a regular file")
    if path.stat().st_size == 0:
        raise AudioError(f"{name}: empty file")
    with open(path, "rb") as f:
        head = f.read(12)
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        # WAV: the standard library reads PCM exactly (read_audio falls back to PyAV
        # for other WAV codecs); WAV is uncompressed, so holding it whole costs little.
        try:
            data, rate = read_audio(path)
        except AudioError as e:
            raise AudioError(str(e).replace(str(path), name, 1)) from e
        rows = data.mean(axis=0, keepdims=True) if mode == "mix" else data
        return Media(_to_rate(rows, rate), rate, data.shape[0], "wav")
    return _decode_av(str(path), name, mode)
