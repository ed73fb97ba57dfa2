"""Media decoding for batch transcription: every common format (encoded here with PyAV
from a WAV), the audio track of a video, channel split, and the error cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from asr.audio import AudioError, write_wav
from asr.batch.media import load_media
from asr.features import resample

from .batch_media import FORMATS, encode, has_encoder, video
from .conftest import speech_like

pytest.importorskip("av")

RATE = 16000


@pytest.fixture(scope="module")
def stereo():
    return np.stack([speech_like(2.0, seed=1), 0.5 * speech_like(2.0, seed=2)])


def _aligned_corr(a: np.ndarray, b: np.ndarray, max_lag: int = 3000) -> float:
    """Peak normalised cross-correlation over lags up to max_lag (codec delays)."""
    n = min(a.size, b.size)
    a, b = a[:n] - a[:n].mean(), b[:n] - b[:n].mean()
    best = 0.0
    for lag in range(0, max_lag, 8):
        x, y = a[lag:], b[: n - lag]
        best = max(best, float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y) + 1e-9)))
        x, y = a[: n - lag], b[lag:]
        best = max(best, float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y) + 1e-9)))
    return best


@pytest.mark.parametrize("kind", list(FORMATS))
def test_compressed_formats_decode_to_16k(tmp_path, stereo, kind):
    codec = FORMATS[kind][1]
    if not has_encoder(codec):
        pytest.skip(f"this PyAV build has no {codec} encoder")
    src = stereo if kind != "amr" else stereo.mean(axis=0)  # AMR-NB is mono, 8 kHz
    path = encode(tmp_path / "clip", src, RATE, kind)
    mixed = load_media(path)
    assert mixed.samples.shape[0] == 1 and mixed.samples.dtype == np.float32
    assert abs(mixed.duration - 2.0) < 0.15, mixed.duration
    reference = stereo.mean(axis=0)
    if kind == "amr":  # narrow band: compare with the 8 kHz band-limited reference
        reference = resample(resample(torch.from_numpy(reference), RATE, 8000), 8000, RATE).numpy()
    floor = {"flac": 0.99, "amr": 0.4}.get(kind, 0.6)  # AMR-NB at 12.2 kbit/s is a speech codec
    assert _aligned_corr(mixed.samples[0], reference) > floor
    if kind != "amr":
        split = load_media(path, "split")
        assert split.samples.shape[0] == 2 and split.source_channels == 2
        assert _aligned_corr(split.samples[0], stereo[0]) > _aligned_corr(split.samples[0], stereo[1])


def test_flac_is_lossless_and_wav_is_exact(tmp_path, stereo):
    pcm = np.round(stereo * 32767) / 32768
    wav = tmp_path / "a.wav"
    write_wav(wav, pcm, RATE)
    flac = encode(tmp_path / "a", pcm, RATE, "flac")
    a, b = load_media(wav, "split"), load_media(flac, "split")
    np.testing.assert_allclose(a.samples, pcm.astype(np.float32), atol=1e-7)
    np.testing.assert_allclose(b.samples[:, : a.samples.shape[1]], a.samples, atol=1e-7)  # + encoder padding
    np.testing.assert_allclose(load_media(wav).samples[0], pcm.mean(axis=0), atol=1e-6)


def test_other_rates_are_resampled_like_the_recognizer(tmp_path):
    x = speech_like(1.0, rate=44100)
    wav = tmp_path / "a.wav"
    write_wav(wav, x, 44100)
    got = load_media(wav).samples[0]
    pcm = np.round(np.clip(x, -1, 1 - 1 / 32768) * 32768) / 32768
    want = resample(torch.from_numpy(pcm.astype(np.float32)), 44100, RATE).numpy()
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_audio_track_of_a_video(tmp_path):
    path = video(tmp_path / "v.mp4", speech_like(1.5))
    m = load_media(path)
    assert m.codec == "aac" and abs(m.duration - 1.5) < 0.15


def test_errors_name_the_reason(tmp_path):
    with pytest.raises(AudioError, match="no audio stream"):
        load_media(video(tmp_path / "silent.mp4", None))
    empty = tmp_path / "empty.mp3"
    empty.write_bytes(b"")
    with pytest.raises(AudioError, match="empty file"):
        load_media(empty)
    corrupt = tmp_path / "corrupt.m4a"
    corrupt.write_bytes(b"\x00\x01garbage" * 100)
    with pytest.raises(AudioError, match="cannot decode"):
        load_media(corrupt)
    truncated = tmp_path / "trunc.wav"
    truncated.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt ")
    with pytest.raises(AudioError):
        load_media(truncated)
    with pytest.raises(AudioError, match="no such file"):
        load_media(tmp_path / "missing.flac")
