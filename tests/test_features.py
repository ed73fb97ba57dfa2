import numpy as np
import pytest
import torch
import torchaudio.compliance.kaldi as kaldi
import torchaudio.functional as AF

from asr.config import FeatureConfig
from asr.features import StreamingFbank, StreamingResampler, _kaldi_fbank, fbank, num_frames, resample, to_float32

from .conftest import speech_like


def random_pieces(x: torch.Tensor, rng: np.random.Generator, max_piece: int):
    i = 0
    while i < x.numel():
        n = int(rng.integers(1, max_piece))
        yield x[i : i + n]
        i += n


def test_fbank_matches_kaldi_as_wenet_calls_it():
    x = torch.from_numpy(speech_like(2.0))
    ref = kaldi.fbank(x[None] * 32768.0, num_mel_bins=80, frame_length=25, frame_shift=10,
                      dither=0.0, energy_floor=0.0, sample_frequency=16000)
    ours = fbank(x)
    assert ours.shape == ref.shape == (num_frames(x.numel()), 80)
    assert torch.allclose(ours, ref, atol=1e-4)


@pytest.mark.parametrize("bins,length_ms,shift_ms", [(80, 25.0, 10.0), (40, 32.0, 12.5)])
def test_fbank_block_is_torchaudio_bit_for_bit(bins, length_ms, shift_ms):
    """The block computation builds the window and mel matrix once; values stay torchaudio's."""
    cfg = FeatureConfig(num_mel_bins=bins, frame_length_ms=length_ms, frame_shift_ms=shift_ms)
    for seed, n in [(0, 5000), (1, 613), (2, 16000)]:
        x = torch.from_numpy(speech_like(n / 16000, seed=seed))[:n]
        x[: n // 3] = 0.0  # digital silence reaches the log floor
        ref = kaldi.fbank(x[None] * 32768.0, num_mel_bins=bins, frame_length=length_ms, frame_shift=shift_ms,
                          dither=0.0, energy_floor=0.0, sample_frequency=16000)
        assert torch.equal(_kaldi_fbank(x, cfg), ref)


def test_digital_silence_reads_like_faint_noise():
    silence = torch.zeros(16000)
    raw = fbank(silence, FeatureConfig(noise_floor=0.0))
    assert raw.max() < -15  # log of the floating-point floor: nothing a model has heard
    floored = fbank(silence)
    noise = torch.randn(48000, generator=torch.Generator().manual_seed(5)) / 32768.0  # white noise, 1 int16 step
    level = fbank(noise, FeatureConfig(noise_floor=0.0)).mean(0)
    assert torch.allclose(floored, level.expand_as(floored), atol=0.5)  # two noise estimates
    # Speech is far above the floor and keeps Kaldi's values (test above); quiet passages
    # inside it do reach the floor, identically whole and streamed.
    x = torch.cat([torch.from_numpy(speech_like(1.0)), torch.zeros(8000), torch.from_numpy(speech_like(0.5))])
    stream = StreamingFbank()
    assert torch.equal(torch.cat([stream.accept(p) for p in x.split(777)]), fbank(x))


def test_int16_input_is_scaled():
    x = speech_like(0.5)
    pcm = (x * 32767).astype(np.int16)
    assert torch.allclose(fbank(torch.from_numpy(pcm)), fbank(torch.from_numpy(pcm.astype(np.float32) / 32768)))


@pytest.mark.parametrize("max_piece", [2, 161, 400, 7000])
def test_streaming_fbank_equals_whole_exactly(max_piece):
    x = torch.from_numpy(speech_like(3.1, seed=max_piece))
    whole = fbank(x)
    for trial in range(3):
        s = StreamingFbank()
        parts = [s.accept(p) for p in random_pieces(x, np.random.default_rng(trial), max_piece)]
        streamed = torch.cat(parts)
        assert streamed.shape == whole.shape
        assert torch.equal(streamed, whole)  # bit for bit


def test_short_audio_gives_no_frames():
    assert fbank(torch.zeros(399)).shape == (0, 80)
    assert fbank(torch.zeros(400)).shape == (1, 80)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_resample_agrees_with_torchaudio(rate):
    x = torch.from_numpy(speech_like(1.3, rate=rate))
    ours = resample(x, rate, 16000)
    ref = AF.resample(x, rate, 16000)
    assert ours.shape == ref.shape
    # Same filter design; differences are float rounding of the convolution.
    assert (ours - ref).abs().max() < 1e-4


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000])
def test_streaming_resampler_equals_whole(rate):
    x = torch.from_numpy(speech_like(1.7, rate=rate, seed=rate))
    whole = resample(x, rate, 16000)
    rng = np.random.default_rng(rate)
    s = StreamingResampler(rate, 16000)
    parts = [s.accept(p) for p in random_pieces(x, rng, 3000)] + [s.flush()]
    streamed = torch.cat(parts)
    assert streamed.shape == whole.shape
    assert (streamed - whole).abs().max() < 1e-6  # stated tolerance: 1e-6 absolute


def test_resampler_emits_incrementally_and_resets():
    s = StreamingResampler(8000, 16000)
    out = s.accept(torch.zeros(800))
    assert 0 < out.numel() <= 1600  # output follows input without waiting for the end
    s.flush()
    assert s.accept(torch.zeros(0)).numel() == 0


def test_bad_input_is_rejected_clearly():
    with pytest.raises(ValueError, match="mono"):
        to_float32(torch.zeros(2, 10))
    with pytest.raises(TypeError, match="int16 or float"):
        to_float32(torch.zeros(10, dtype=torch.int32))
    with pytest.raises(ValueError, match="positive integers"):
        StreamingResampler(0, 16000)
