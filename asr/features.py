"""Audio front end: int16/float conversion, resampling to 16 kHz, Kaldi-compatible fbank.

Both the resampler and the fbank extractor come in a whole-signal form and a streaming
form; the streaming forms, fed arbitrary chunk sizes, give the same output as the whole
signal (fbank frames are independent of each other with `snip_edges`, and the resampler
keeps exactly the input history that its filter needs).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torchaudio.compliance.kaldi as kaldi

from .config import FeatureConfig

__all__ = [
    "to_float32",
    "resample",
    "StreamingResampler",
    "fbank",
    "num_frames",
    "StreamingFbank",
    "SUPPORTED_RATES",
]

# Rates the tests cover; any positive integer rate works.
SUPPORTED_RATES = (8000, 16000, 22050, 44100, 48000)


def to_float32(audio: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Mono audio as float32 in [-1, 1]: int16 is scaled by 1/32768; floats are clipped to
    full scale (NaN read as silence), as samples far beyond it overflow the features."""
    if isinstance(audio, np.ndarray):
        audio = torch.from_numpy(np.ascontiguousarray(audio))
    if audio.dim() != 1:
        raise ValueError(f"expected mono audio of shape (samples,), got {tuple(audio.shape)}")
    if audio.dtype == torch.int16:
        return audio.to(torch.float32) / 32768.0
    if audio.dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        return torch.nan_to_num(audio.to(torch.float32), nan=0.0).clamp(-1.0, 1.0)
    raise TypeError(f"audio must be int16 or float samples, got {audio.dtype}")


# ---------------------------------------------------------------- resampling


def _sinc_kernel(orig: int, new: int, lowpass_width: int = 6, rolloff: float = 0.99) -> tuple[torch.Tensor, int]:
    """Hann-windowed sinc polyphase filters, shape (new, 1, 2*width + orig).

    Same design as torchaudio's default `resample` (width 6 zero crossings, rolloff
    0.99), so the streaming path agrees with `torchaudio.functional.resample`.
    """
    base = min(orig, new) * rolloff
    width = math.ceil(lowpass_width * orig / base)
    idx = torch.arange(-width, width + orig, dtype=torch.float64)[None] / orig
    phase = -torch.arange(new, dtype=torch.float64)[:, None] / new
    t = ((phase + idx) * base).clamp(-lowpass_width, lowpass_width)
    window = torch.cos(t * math.pi / lowpass_width / 2) ** 2
    t = t * math.pi
    sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / torch.where(t == 0, torch.ones_like(t), t))
    kernel = (sinc * window * base / orig).to(torch.float32)
    return kernel[:, None], width


def _reduced(orig: int, new: int) -> tuple[int, int]:
    if orig <= 0 or new <= 0 or int(orig) != orig or int(new) != new:
        raise ValueError(f"sample rates must be positive integers, got {orig} and {new}")
    g = math.gcd(int(orig), int(new))
    return int(orig) // g, int(new) // g


def resample(audio: torch.Tensor, orig_rate: int, new_rate: int = 16000) -> torch.Tensor:
    """Whole-signal resampling of float32 mono audio (samples,)."""
    stream = StreamingResampler(orig_rate, new_rate)
    return torch.cat([stream.accept(audio), stream.flush()])


class StreamingResampler:
    """Polyphase sinc resampler fed arbitrary chunk sizes.

    Output sample `b*new + j` depends on input samples `[b*orig - width, b*orig + width + orig)`,
    so a block of `new` outputs is produced once that span has arrived; `flush` zero-pads
    the end exactly as whole-signal resampling does and trims to ceil(new*len/orig).
    """

    def __init__(self, orig_rate: int, new_rate: int = 16000) -> None:
        self.orig, self.new = _reduced(orig_rate, new_rate)
        self.identity = self.orig == self.new
        if not self.identity:
            self.kernel, self.width = _sinc_kernel(self.orig, self.new)
        self.reset()

    def reset(self) -> None:
        self._buf = torch.zeros(0)
        self._buf_start = 0  # absolute input index of _buf[0] (may be negative: left zero pad)
        self._received = 0  # input samples seen
        self._blocks = 0  # output blocks produced
        if not self.identity:
            self._buf = torch.zeros(self.width)
            self._buf_start = -self.width

    def _run(self, upto_blocks: int) -> torch.Tensor:
        """Produce blocks [self._blocks, upto_blocks) from the buffer."""
        n = upto_blocks - self._blocks
        if n <= 0:
            return torch.zeros(0)
        start = self._blocks * self.orig - self.width - self._buf_start
        span = (n - 1) * self.orig + self.kernel.shape[-1]
        seg = self._buf[start : start + span]
        if seg.numel() < span:
            seg = torch.nn.functional.pad(seg, (0, span - seg.numel()))
        out = torch.nn.functional.conv1d(seg[None, None], self.kernel, stride=self.orig)  # (1, new, n)
        self._blocks = upto_blocks
        # Keep only the history the next block needs.
        keep_from = self._blocks * self.orig - self.width
        drop = keep_from - self._buf_start
        if drop > 0:
            self._buf = self._buf[drop:]
            self._buf_start = keep_from
        return out[0].transpose(0, 1).reshape(-1)

    def accept(self, audio: torch.Tensor) -> torch.Tensor:
        """Feed float32 samples (samples,); return the output samples now computable."""
        audio = to_float32(audio)
        if self.identity:
            self._received += audio.numel()
            return audio
        self._buf = torch.cat([self._buf, audio])
        self._received += audio.numel()
        # Block b needs input up to index b*orig + width + orig - 1 < received.
        ready = (self._received - self.width - self.orig) // self.orig + 1
        return self._run(max(ready, self._blocks))

    def flush(self) -> torch.Tensor:
        """End of input: emit the remaining outputs and reset."""
        if self.identity:
            self.reset()
            return torch.zeros(0)
        total = math.ceil(self.new * self._received / self.orig)
        produced = self._blocks * self.new
        blocks = math.ceil(total / self.new)
        out = self._run(max(blocks, self._blocks))
        out = out[: max(total - produced, 0)]
        self.reset()
        return out


# ---------------------------------------------------------------- fbank


# Frames per kaldi.fbank call. The mel projection is a matrix product whose rounding can
# depend on the number of rows; computing every frame inside a block of exactly this many
# rows makes a frame's value independent of how the audio was chunked.
_BLOCK_FRAMES = 32


@functools.lru_cache(maxsize=8)
def _fbank_constants(cfg: FeatureConfig) -> tuple[int, int, int, torch.Tensor, torch.Tensor]:
    """(shift, window, padded window, povey window (1, window), mel matrix (padded/2 + 1, bins)),
    built as `kaldi.fbank` builds them on every call."""
    shift = int(cfg.sample_rate * cfg.frame_shift_ms * 0.001)
    size = int(cfg.sample_rate * cfg.frame_length_ms * 0.001)
    padded = 1 << (size - 1).bit_length()
    window = torch.hann_window(size, periodic=False, dtype=torch.float32).pow(0.85).unsqueeze(0)
    mel, _ = kaldi.get_mel_banks(cfg.num_mel_bins, padded, float(cfg.sample_rate), 20.0, 0.0, 100.0, -500.0, 1.0)
    mel = torch.nn.functional.pad(mel.to(torch.float32), (0, 1), mode="constant", value=0)
    return shift, size, padded, window, mel.T


def _kaldi_fbank(samples: torch.Tensor, cfg: FeatureConfig) -> torch.Tensor:
    """`kaldi.fbank` with our settings on float samples (at least one window of them).

    Without dither, the same operations in the same order with the window and mel matrix
    built once: bit-identical output (tests/test_features.py) in half the time, since
    torchaudio rebuilds both on every call (2 calls per 640 ms chunk of every stream).
    """
    if cfg.dither != 0.0:
        return kaldi.fbank(
            samples[None] * 32768.0,
            num_mel_bins=cfg.num_mel_bins,
            frame_length=cfg.frame_length_ms,
            frame_shift=cfg.frame_shift_ms,
            dither=cfg.dither,
            energy_floor=0.0,
            sample_frequency=cfg.sample_rate,
        )
    shift, size, padded, window, mel = _fbank_constants(cfg)
    wave = samples * 32768.0
    frames = wave.as_strided((1 + (wave.numel() - size) // shift, size), (shift * wave.stride(0), wave.stride(0)))
    frames = frames - torch.mean(frames, dim=1).unsqueeze(1)  # DC offset
    previous = torch.nn.functional.pad(frames.unsqueeze(0), (1, 0), mode="replicate").squeeze(0)
    frames = (frames - 0.97 * previous[:, :-1]) * window  # pre-emphasis, povey window
    frames = torch.nn.functional.pad(frames.unsqueeze(0), (0, padded - size), mode="constant", value=0).squeeze(0)
    power = torch.fft.rfft(frames).abs().pow(2.0)
    return torch.max(torch.mm(power, mel), torch.tensor(torch.finfo(torch.float32).eps)).log()


@functools.lru_cache(maxsize=8)
def _floor(cfg: FeatureConfig) -> torch.Tensor:
    """(num_mel_bins,) mean log-mel of 2 s of white noise at cfg.noise_floor int16 steps
    (fixed seed: the same floor in every process)."""
    noise = torch.randn(2 * cfg.sample_rate, generator=torch.Generator().manual_seed(0)) * (cfg.noise_floor / 32768.0)
    return _kaldi_fbank(noise, cfg).mean(dim=0)


def _fbank_frames(audio: torch.Tensor, first: int, count: int, cfg: FeatureConfig) -> torch.Tensor:
    """Frames [first, first+count) of `audio` (which holds every sample they need)."""
    out = []
    for b in range(first, first + count, _BLOCK_FRAMES):
        n = min(_BLOCK_FRAMES, first + count - b)
        seg = audio[b * cfg.shift : b * cfg.shift + (_BLOCK_FRAMES - 1) * cfg.shift + cfg.window]
        need = (_BLOCK_FRAMES - 1) * cfg.shift + cfg.window
        if seg.numel() < need:
            seg = torch.nn.functional.pad(seg, (0, need - seg.numel()))
        feats = _kaldi_fbank(seg, cfg)[:n]
        if cfg.noise_floor > 0:
            feats = torch.maximum(feats, _floor(cfg))
        out.append(feats)
    return torch.cat(out) if out else torch.zeros(0, cfg.num_mel_bins)


def num_frames(num_samples: int, cfg: FeatureConfig = FeatureConfig()) -> int:
    """Frames that `num_samples` samples give with snip_edges (0 if shorter than a window)."""
    return 0 if num_samples < cfg.window else 1 + (num_samples - cfg.window) // cfg.shift


def fbank(audio: torch.Tensor, cfg: FeatureConfig = FeatureConfig()) -> torch.Tensor:
    """Log-mel fbank of 16 kHz float audio in [-1, 1]: (frames, num_mel_bins).

    Matches WeNet: Kaldi fbank on int16-scaled samples, povey window, pre-emphasis 0.97,
    DC removal, snip_edges, energy_floor 0, dither 0 at inference; then each value is
    raised to `cfg.noise_floor`'s (digital silence reads like faint noise). With
    noise_floor 0 the output is `kaldi.fbank`'s, bit for bit.
    """
    audio = to_float32(audio)
    return _fbank_frames(audio, 0, num_frames(audio.numel(), cfg), cfg)


class StreamingFbank:
    """Fbank over a stream of 16 kHz samples, chunked any way: same frames as `fbank`.

    Each frame depends only on its own 25 ms window, so frames are emitted as soon as a
    window is complete and the samples before the next window start are dropped.
    """

    def __init__(self, cfg: FeatureConfig = FeatureConfig()) -> None:
        self.cfg = cfg
        self._buf = torch.zeros(0)
        self.frames_emitted = 0

    def accept(self, audio: torch.Tensor) -> torch.Tensor:
        self._buf = torch.cat([self._buf, to_float32(audio)])
        frames = num_frames(self._buf.numel(), self.cfg)
        if frames == 0:
            return torch.zeros(0, self.cfg.num_mel_bins)
        feats = _fbank_frames(self._buf, 0, frames, self.cfg)
        self._buf = self._buf[frames * self.cfg.shift :]
        self.frames_emitted += frames
        return feats

    def reset(self) -> None:
        self._buf = torch.zeros(0)
        self.frames_emitted = 0
