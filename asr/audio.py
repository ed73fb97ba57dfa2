"""Reading and writing audio files.

PCM WAV is read with the standard library (no dependency, exact samples); every other
format (and WAV codecs the stdlib does not know) goes through PyAV when it is installed.
"""

from __future__ import annotations

import wave
from pathlib import Path

import av
import numpy as np

__all__ = ["AudioError", "read_audio", "write_wav"]


class AudioError(ValueError):
    """The file is missing, empty, corrupt or has no audio stream."""


def _read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as w:
        width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
        raw = w.readframes(w.getnframes())
    if width == 2:
        data = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    elif width == 1:
        data = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 4:
        data = np.frombuffer(raw, dtype="<i4").astype(np.float32) / 2147483648.0
    elif width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        data = (np.where(v >= 1 << 23, v - (1 << 24), v)).astype(np.float32) / 8388608.0
    else:
        raise AudioError(f"{path}: unsupported WAV sample width {width}")
    return data.reshape(-1, channels).T.copy(), rate


def _read_av(path: Path) -> tuple[np.ndarray, int]:
    try:
        with av.open(str(path)) as container:
            streams = container.streams.audio
            if not streams:
                raise AudioError(f"{path}: no audio stream")
            stream = streams[0]
            rate = stream.codec_context.sample_rate or stream.rate
            chunks = []
            for frame in container.decode(stream):
                arr = frame.to_ndarray()
                if frame.format.is_planar:
                    arr = arr.reshape(len(frame.layout.channels), -1)
                else:
                    arr = arr.reshape(-1, len(frame.layout.channels)).T
                if arr.dtype.kind == "i":
                    arr = arr.astype(np.float32) / float(np.iinfo(arr.dtype).max + 1)
                elif arr.dtype.kind == "u":
                    arr = (arr.astype(np.float32) - 128.0) / 128.0
                chunks.append(arr.astype(np.float32))
    except AudioError:
        raise
    except Exception as e:  # PyAV raises many error classes for corrupt input
        raise AudioError(f"{path}: cannot decode audio ({e})") from e
    if not chunks:
        raise AudioError(f"{path}: the audio stream holds no samples")
    return np.concatenate(chunks, axis=1), int(rate)


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """(samples (channels, n) float32 in [-1, 1], sample_rate)."""
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file")
    try:
        data, rate = _read_wav(path)
    except (wave.Error, EOFError):
        data, rate = _read_av(path)
    if data.shape[1] == 0:
        raise AudioError(f"{path}: no samples")
    return data, rate


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int) -> None:
    """Write float32 [-1, 1] (n,) or (channels, n) audio as 16-bit PCM WAV."""
    audio = np.atleast_2d(np.asarray(audio, dtype=np.float32))
    pcm = (np.clip(audio, -1.0, 1.0 - 1 / 32768) * 32768.0).round().astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(audio.shape[0])
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.T.tobytes())
