"""Whisper's log-mel front end, as OpenAI's and faster-whisper's reference computes it.

16 kHz mono; 400-sample periodic Hann window, hop 160, centred frames (reflect padding);
power spectrum with the last frame dropped; 80 Slaney mel filters (0-8 kHz, Slaney area
normalisation); log10 floored at 1e-10; values clamped below (maximum - 8); (x + 4) / 4.

The clamp depends on the loudest frame of the whole input, so features of a prefix of an
utterance differ from the same frames of the whole utterance only where they are within
8 (x10 dB) of a louder frame that had not arrived yet, in practice silence.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import torchaudio

__all__ = ["SAMPLE_RATE", "HOP", "N_FFT", "N_MELS", "WhisperFeatures", "log_mel", "mel_filters"]

SAMPLE_RATE, N_FFT, HOP, N_MELS = 16000, 400, 160, 80
# faster-whisper appends one hop of zeros before the STFT, so that the last full hop of
# audio gets its own frame; kept so that features match it frame for frame.
TAIL_PAD = HOP


@functools.lru_cache(maxsize=None)
def mel_filters(n_mels: int = N_MELS) -> torch.Tensor:
    """(n_mels, n_fft/2 + 1) Slaney-scale, Slaney-normalised mel filter bank (float32)."""
    fb = torchaudio.functional.melscale_fbanks(
        N_FFT // 2 + 1, 0.0, SAMPLE_RATE / 2, n_mels, SAMPLE_RATE, norm="slaney", mel_scale="slaney"
    )
    return fb.T.contiguous().float()


@functools.lru_cache(maxsize=None)
def _window() -> torch.Tensor:
    return torch.hann_window(N_FFT, periodic=True, dtype=torch.float32)


def log_mel(samples: np.ndarray | torch.Tensor, tail_pad: int = TAIL_PAD) -> torch.Tensor:
    """(frames, 80) normalised log-mel features of 16 kHz float samples in [-1, 1];
    frames = (len(samples) + tail_pad) // 160."""
    x = torch.as_tensor(samples, dtype=torch.float32).flatten()
    if tail_pad:
        x = torch.nn.functional.pad(x, (0, tail_pad))
    if x.numel() < N_FFT // 2 + 1:
        # reflect padding needs more samples than half a window; pad with zeros first
        x = torch.nn.functional.pad(x, (0, N_FFT // 2 + 1 - x.numel()))
    spec = torch.stft(x, N_FFT, HOP, window=_window(), center=True, pad_mode="reflect", return_complex=True)
    power = spec[:, :-1].abs() ** 2
    mel = mel_filters() @ power
    logm = torch.clamp(mel, min=1e-10).log10()
    logm = torch.maximum(logm, logm.max() - 8.0)
    return ((logm + 4.0) / 4.0).T.contiguous()


@dataclass(frozen=True)
class WhisperFeatures:
    """Whisper's front end as a value that pickles (batch workers compute features):
    the counterpart of `asr.config.FeatureConfig` for Whisper-CTC models."""

    sample_rate: int = SAMPLE_RATE
    num_mel_bins: int = N_MELS
    frame_shift_ms: float = 1000 * HOP / SAMPLE_RATE

    def compute(self, samples: np.ndarray | torch.Tensor) -> torch.Tensor:
        return log_mel(samples)
