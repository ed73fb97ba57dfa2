"""Test media: compressed audio and video files encoded with PyAV from samples.

`encode(path, samples, rate, codec, ...)` writes `samples` ((channels, n) float32)
with the given audio codec into the container PyAV infers from the file name, with an
optional small video stream; `video_only` writes a video without audio.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from asr.features import resample

av = None
try:
    import av  # type: ignore[no-redef]
except ImportError:  # pragma: no cover
    pass

# name: (file suffix, audio codec, encoder sample rate, PyAV sample format)
FORMATS = {
    "mp3": (".mp3", "libmp3lame", 16000, "fltp"),
    "aac_m4a": (".m4a", "aac", 16000, "fltp"),
    "opus_ogg": (".ogg", "libopus", 48000, "flt"),
    "opus_webm": (".webm", "libopus", 48000, "flt"),
    "flac": (".flac", "flac", 16000, "s16"),
    "amr": (".amr", "libopencore_amrnb", 8000, "s16"),
}


def has_encoder(codec: str) -> bool:
    if av is None:
        return False
    try:
        av.codec.Codec(codec, "w")
        return True
    except Exception:  # noqa: BLE001
        return False


def _resample(x: np.ndarray, rate: int, new: int) -> np.ndarray:
    if rate == new:
        return x


    return np.stack([resample(torch.from_numpy(np.ascontiguousarray(r)), rate, new).numpy() for r in x])


def _add_audio(container, samples: np.ndarray, rate: int, codec: str, enc_rate: int, fmt: str):
    samples = _resample(np.atleast_2d(samples).astype(np.float32), rate, enc_rate)
    channels = samples.shape[0]
    layout = "mono" if channels == 1 else "stereo"
    stream = container.add_stream(codec, rate=enc_rate, layout=layout)
    if codec == "libopencore_amrnb":
        stream.bit_rate = 12200
    frame_size = stream.codec_context.frame_size or 1024
    packets = []
    for i in range(0, samples.shape[1], frame_size):
        chunk = samples[:, i : i + frame_size]
        if chunk.shape[1] < frame_size and stream.codec_context.frame_size:
            chunk = np.pad(chunk, ((0, 0), (0, frame_size - chunk.shape[1])))
        if fmt == "s16":
            arr = (np.clip(chunk, -1, 1 - 1 / 32768) * 32768).astype(np.int16)
        else:
            arr = chunk.astype(np.float32)
        if fmt in ("fltp",):
            frame = av.AudioFrame.from_ndarray(arr, format=fmt, layout=layout)
        else:
            frame = av.AudioFrame.from_ndarray(arr.T.reshape(1, -1).copy(), format=fmt, layout=layout)
        frame.sample_rate = enc_rate
        frame.pts = i
        frame.time_base = Fraction(1, enc_rate)
        packets.extend(stream.encode(frame))
    return stream, packets


def _add_video(container, seconds: float, codec: str = "mpeg4"):
    stream = container.add_stream(codec, rate=10)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    packets = []
    for i in range(max(1, int(seconds * 10))):
        img = np.full((48, 64, 3), (i * 7) % 255, dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts = i
        packets.extend(stream.encode(frame))
    return stream, packets


def encode(path: Path, samples: np.ndarray, rate: int, kind: str) -> Path:
    """Write `samples` as `kind` (a FORMATS key); returns the path with its suffix."""
    suffix, codec, enc_rate, fmt = FORMATS[kind]
    path = path.with_suffix(suffix)
    with av.open(str(path), "w") as container:
        stream, packets = _add_audio(container, samples, rate, codec, enc_rate, fmt)
        for p in packets:
            container.mux(p)
        for p in stream.encode(None):
            container.mux(p)
    return path


def video(path: Path, samples: np.ndarray | None, rate: int = 16000, seconds: float = 1.0) -> Path:
    """An MP4 with a small MPEG-4 video stream and, when samples are given, AAC audio."""
    with av.open(str(path), "w") as container:
        streams = []
        if samples is not None:
            seconds = np.atleast_2d(samples).shape[1] / rate
            streams.append(_add_audio(container, samples, rate, "aac", 16000, "fltp"))
        streams.append(_add_video(container, seconds))
        for _, packets in streams:
            for p in packets:
                container.mux(p)
        for stream, _ in streams:
            for p in stream.encode(None):
                container.mux(p)
    return path
