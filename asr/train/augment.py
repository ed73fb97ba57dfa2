"""On-the-fly waveform augmentation for training on synthetic (TTS) speech.

The training data of a Mandarin model trained on TTS output is clean, has a
handful of voices and a studio channel.  The chain below pushes it towards
real users: other speakers (pseudo-speakers, speed), rooms (reverberation),
background (noise, babble), telephone lines (300-3400 Hz, 8 kHz, G.711) and
arbitrary recording levels (gain, clipping).

Everything works on 16 kHz mono float32 numpy waveforms in [-1, 1] and is
deterministic given a ``np.random.Generator``.  Large FFTs go through
``torch.fft`` (MKL / pocketfft in C++), which is markedly faster than
``numpy.fft`` for batched frames; resampling uses
``torchaudio.functional.resample`` with small integer ratios only.

Typical use inside a data loader worker::

    aug = Augmenter(AugmentConfig())
    res = aug.apply(wav, rng, babble=other_wavs)   # AugmentResult
    res.wav, res.speed_factor, res.applied
    # or: wav = aug(wav, rng, babble); aug.last_speed_factor

``speed_factor`` is s in ``len(out) ~= len(in) / s`` (Kaldi convention:
speed 1.1 means 10 % faster and shorter); it is the only effect that changes
the duration.  Transcripts are unchanged by every effect.

Features: ``spec_augment`` masks time and frequency bands of a (T, F)
feature matrix like WeNet's ``spec_aug``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import torch
import torchaudio.functional as taF

from asr import g711

__all__ = [
    "AugmentConfig",
    "AugmentResult",
    "Augmenter",
    "spec_augment",
    "speed_perturb",
    "wsola_stretch",
    "formant_warp",
    "pseudo_speaker",
    "synth_rir",
    "reverberate",
    "make_noise",
    "add_noise",
    "telephone_bandlimit",
    "telephone_upsample",
    "g711_roundtrip",
    "telephone_channel",
    "active_power",
    "NOISE_TYPES",
]

NOISE_TYPES = ("white", "pink", "brown", "hum", "babble")


# --------------------------------------------------------------------------- #
# configuration                                                               #
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of the augmentation chain.

    Defaults aim at a model trained on TTS speech that must work on real
    human speech, in rooms, with background noise and over the telephone,
    while keeping about a quarter of the samples close to clean.
    """

    sample_rate: int = 16000

    # Speed perturbation (Kaldi style: pick one of `speeds` uniformly).
    # Changes the duration: len(out) ~= len(in) / speed.
    p_speed: float = 1.0
    speeds: tuple[float, ...] = (0.9, 1.0, 1.1)

    # Pseudo-speakers.  Formant (vocal-tract length) scaling by `vtl_range`
    # and, with probability `p_pitch` inside the effect, an F0 change of
    # `pitch_semitones` done by resampling plus a compensating WSOLA tempo
    # change (duration is preserved exactly).  TTS corpora have few voices:
    # this is the main lever for generalising to human speakers.
    p_pseudo_speaker: float = 0.6
    vtl_range: tuple[float, float] = (0.85, 1.15)
    p_pitch: float = 0.5
    pitch_semitones: tuple[float, float] = (-3.0, 3.0)

    # Reverberation with a synthetic room impulse response.
    p_reverb: float = 0.3
    rt60_range: tuple[float, float] = (0.1, 0.8)
    drr_db_range: tuple[float, float] = (-3.0, 12.0)  # direct-to-reverberant ratio

    # Additive noise; one type per sample, chosen with `noise_weights`
    # (babble is skipped when no babble utterances are passed).
    p_noise: float = 0.5
    snr_db_range: tuple[float, float] = (5.0, 25.0)
    noise_weights: tuple[tuple[str, float], ...] = (
        ("white", 1.0),
        ("pink", 2.0),
        ("brown", 1.0),
        ("hum", 0.5),
        ("babble", 2.0),
    )
    # Babble is speech: keep it at a low level so it stays background.
    babble_snr_db_range: tuple[float, float] = (12.0, 25.0)
    babble_talkers: tuple[int, int] = (3, 6)
    hum_freq: float = 50.0  # mainland China mains frequency
    hum_harmonics: tuple[int, int] = (3, 12)

    # Telephone channel: band-pass, 8 kHz, G.711 round trip, back to 16 kHz.
    p_telephone: float = 0.3
    telephone_band: tuple[float, float] = (300.0, 3400.0)
    p_alaw: float = 0.5  # otherwise mu-law; China's PSTN is A-law, the US mu-law

    # Random gain, then clipping to [-1, 1].
    p_gain: float = 0.8
    gain_db_range: tuple[float, float] = (-20.0, 6.0)

    def __post_init__(self) -> None:
        for name in ("p_speed", "p_pseudo_speaker", "p_pitch", "p_reverb", "p_noise",
                     "p_telephone", "p_alaw", "p_gain"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name}={v} is not a probability")
        for name in ("vtl_range", "pitch_semitones", "rt60_range", "drr_db_range",
                     "snr_db_range", "babble_snr_db_range", "babble_talkers",
                     "hum_harmonics", "telephone_band", "gain_db_range"):
            lo, hi = getattr(self, name)
            if lo > hi:
                raise ValueError(f"{name}: low {lo} > high {hi}")
        if not self.speeds or min(self.speeds) <= 0:
            raise ValueError("speeds must be positive")
        if self.vtl_range[0] <= 0 or self.rt60_range[0] <= 0:
            raise ValueError("vtl_range and rt60_range must be positive")
        for name, w in self.noise_weights:
            if name not in NOISE_TYPES or w < 0:
                raise ValueError(f"bad noise weight {(name, w)}")
        if self.p_telephone > 0 and self.sample_rate % 8000:
            raise ValueError("the telephone channel needs a sample rate multiple of 8000")


@dataclass
class AugmentResult:
    wav: np.ndarray
    speed_factor: float = 1.0
    applied: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- #
# helpers                                                                     #
# --------------------------------------------------------------------------- #


@functools.cache
def _fast_lengths() -> np.ndarray:
    vals = []
    for a in range(0, 26):
        for b in range(0, 12):
            for c in range(0, 8):
                v = 2**a * 3**b * 5**c
                if v <= 2**25:
                    vals.append(v)
    return np.array(sorted(vals))


def _fast_len(n: int, multiple: int = 1) -> int:
    """Smallest 5-smooth integer >= n that is a multiple of `multiple` (a power of 2)."""
    table = _fast_lengths()
    i = int(np.searchsorted(table, n))
    while i < len(table) and table[i] % multiple:
        i += 1
    if i >= len(table):
        return int(math.ceil(n / multiple) * multiple)
    return int(table[i])


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def active_power(x: np.ndarray, frame: int = 320, floor_db: float = -40.0) -> float:
    """Mean power of the frames within `floor_db` of the loudest frame.

    A crude active-speech level: leading/trailing silence of TTS output does
    not lower it.  For a stationary signal it equals the mean power.
    """
    x = np.asarray(x, dtype=np.float32)
    if x.size == 0:
        return 0.0
    n = len(x) // frame
    if n < 2:
        return float(np.mean(np.square(x, dtype=np.float64)))
    e = np.square(x[: n * frame].reshape(n, frame), dtype=np.float32).mean(axis=1, dtype=np.float64)
    emax = e.max()
    if emax <= 0:
        return 0.0
    return float(e[e >= emax * 10 ** (floor_db / 10)].mean())


def _rms_match(y: np.ndarray, ref_power: float) -> np.ndarray:
    p = active_power(y)
    if p <= 0 or ref_power <= 0:
        return y
    return (y * np.float32(math.sqrt(ref_power / p))).astype(np.float32, copy=False)


def _resample(x: np.ndarray, orig: int, new: int) -> np.ndarray:
    if orig == new:
        return x
    return taF.resample(_t(x)[None], orig, new)[0].numpy()


# --------------------------------------------------------------------------- #
# speed and pseudo-speakers                                                   #
# --------------------------------------------------------------------------- #


def speed_perturb(wav: np.ndarray, factor: float) -> np.ndarray:
    """Kaldi/sox ``speed``: resample so that len(out) ~= len(in) / factor.

    Pitch and formants move by `factor` as well, like playing a tape faster.
    """
    if factor == 1.0:
        return wav
    fr = Fraction(factor).limit_denominator(50)
    return _resample(wav, fr.numerator, fr.denominator)


def wsola_stretch(x: np.ndarray, out_len: int, win: int = 512, tol: int = 128) -> np.ndarray:
    """Change the tempo of `x` to `out_len` samples without changing its pitch.

    Waveform-similarity overlap-add: Hann frames with 50 % overlap, each input
    frame shifted by up to +-`tol` samples to line up with the natural
    continuation of the previous one (maximum cross-correlation over the
    overlapping half).  `tol` = 8 ms at 16 kHz covers F0 down to ~60 Hz.
    """
    x = np.asarray(x, dtype=np.float32)
    L = len(x)
    if out_len <= 0:
        return np.zeros(0, np.float32)
    if L == 0:
        return np.zeros(out_len, np.float32)
    hs = win // 2
    rate = L / out_len
    n_frames = -(-(out_len + hs) // hs) + 1
    pre = hs + tol
    a_max = int(round((n_frames - 1) * hs * rate))
    post = max(0, a_max - L) + win + 2 * tol
    xp = np.concatenate([np.zeros(pre, np.float32), x, np.zeros(post, np.float32)])
    w = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)).astype(np.float32)
    y = np.zeros((n_frames + 1) * hs, np.float32)
    prev = pre - hs  # padded index where frame 0 starts (delta = 0)
    y[:win] += w * xp[prev : prev + win]
    corr = np.correlate
    for k in range(1, n_frames):
        nominal = pre + int(round(k * hs * rate)) - hs
        template = xp[prev + hs : prev + win]
        lo = nominal - tol
        c = corr(xp[lo : nominal + tol + hs], template, "valid")
        start = lo + int(np.argmax(c))
        y[k * hs : k * hs + win] += w * xp[start : start + win]
        prev = start
    return y[hs : hs + out_len]


def _lpc(r: torch.Tensor, order: int) -> torch.Tensor:
    """Levinson-Durbin on autocorrelations r (frames, order+1), vectorised over
    frames.  Returns the prediction polynomials a (frames, order+1), a[:, 0] = 1."""
    n = r.shape[0]
    a = torch.zeros(n, order + 1, dtype=r.dtype)
    a[:, 0] = 1.0
    err = r[:, 0].clone()
    for i in range(1, order + 1):
        acc = r[:, i] + (a[:, 1:i] * r[:, 1:i].flip(1)).sum(1)
        k = -acc / err
        a[:, 1:i] = a[:, 1:i] + k[:, None] * a[:, 1:i].flip(1)
        a[:, i] = k
        err = err * (1.0 - k * k)
    return a


@functools.cache
def _dft_basis(n_fft: int, order: int) -> tuple[torch.Tensor, torch.Tensor]:
    w = 2 * np.pi * np.arange(n_fft // 2 + 1) / n_fft
    i = np.arange(order + 1)
    return (
        torch.from_numpy(np.cos(np.outer(i, w)).astype(np.float32)),
        torch.from_numpy(np.sin(np.outer(i, w)).astype(np.float32)),
    )


def formant_warp(
    x: np.ndarray,
    warp: float,
    n_fft: int = 512,
    hop: int = 128,
    order: int = 20,
    max_gain_db: float = 30.0,
) -> np.ndarray:
    """Scale the spectral envelope (formants) by `warp`, keeping F0 and timing.

    Per STFT frame (32 ms Hann, 8 ms hop at 16 kHz) an all-pole (LPC,
    order 20) envelope env(f) is fitted, and the frame is multiplied by the
    real gain env(f / warp) / env(f) (limited to +-`max_gain_db`): the
    excitation (harmonics, F0) stays where it is, the resonances move.
    warp > 1 moves formants up (shorter vocal tract), < 1 down.  Phases are
    untouched, so there is no phase vocoder; the cost is one STFT/ISTFT, a
    vectorised Levinson recursion and two small matrix products.
    """
    x = np.asarray(x, dtype=np.float32)
    if warp == 1.0 or len(x) < n_fft:
        return x
    xt = _t(x)
    window = torch.hann_window(n_fft)
    X = torch.stft(xt, n_fft, hop, window=window, center=True, return_complex=True)  # (bins, frames)
    power = X.real.square() + X.imag.square()
    r = torch.fft.irfft(power, n_fft, dim=0)[: order + 1].T.contiguous()  # (frames, order+1)
    r[:, 0] = r[:, 0] * (1.0 + 1e-4) + 1e-9  # -40 dB floor keeps the fit stable
    a = _lpc(r, order)
    C, S = _dft_basis(n_fft, order)
    inv_env = (a @ C).square() + (a @ S).square()  # |A(w)|^2, (frames, bins)
    w = torch.arange(n_fft // 2 + 1, dtype=torch.float32) * (2 * math.pi / n_fft)
    ws = torch.clamp(w / float(warp), max=math.pi)
    i = torch.arange(order + 1, dtype=torch.float32)[:, None]
    inv_env_w = (a @ torch.cos(i * ws)).square() + (a @ torch.sin(i * ws)).square()
    lim = max_gain_db / 10 * math.log(10)  # in log-power units
    log_gain = (0.5 * torch.log((inv_env + 1e-12) / (inv_env_w + 1e-12))).clamp_(-lim / 2, lim / 2)
    Y = X * torch.exp(log_gain).T
    y = torch.istft(Y, n_fft, hop, window=window, center=True, length=len(x))
    return y.numpy()


def pseudo_speaker(x: np.ndarray, vtl: float, pitch: float = 1.0) -> np.ndarray:
    """Turn `x` into another voice: formants scaled by `vtl`, F0 by `pitch`.

    F0 (and, with it, the formants) is scaled by resampling with a small
    integer ratio p/q ~= `pitch`, then the tempo is restored with WSOLA so the
    duration is unchanged.  The formants are then moved by vtl / p*q with
    ``formant_warp``, so they end up scaled by `vtl` overall.  With
    pitch == vtl this is plain VTLP-by-resampling with tempo compensation.
    Output length equals input length and the level is kept.
    """
    x = np.asarray(x, dtype=np.float32)
    ref = active_power(x)
    y = x
    realised_pitch = 1.0
    if pitch != 1.0:
        fr = Fraction(pitch).limit_denominator(24)
        if fr != 1:
            realised_pitch = fr.numerator / fr.denominator
            y = wsola_stretch(_resample(x, fr.numerator, fr.denominator), len(x))
    residual = vtl / realised_pitch
    if abs(residual - 1.0) > 1e-3:
        y = formant_warp(y, residual)
    return _rms_match(y, ref)


# --------------------------------------------------------------------------- #
# reverberation                                                               #
# --------------------------------------------------------------------------- #


def synth_rir(
    rng: np.random.Generator,
    rt60: float,
    sr: int = 16000,
    drr_db: float = 6.0,
) -> np.ndarray:
    """A synthetic room impulse response.

    Direct path (unit impulse at t = 0), 3-10 early reflections in the first
    3-40 ms, and an exponentially decaying diffuse tail (Gaussian noise whose
    energy falls 60 dB in `rt60` seconds; the upper band decays faster, like
    air and wall absorption) starting after a 2-8 ms pre-delay.  The
    reverberant part is scaled to the direct-to-reverberant ratio `drr_db`.
    """
    n = max(int(rt60 * sr), int(0.05 * sr))
    t = np.arange(n, dtype=np.float32) / sr
    # Diffuse tail: rt60 below ~4 kHz, a shorter one above (air absorption).
    noise = rng.standard_normal(n, dtype=np.float32)
    spec = torch.fft.rfft(_t(noise))
    f = torch.fft.rfftfreq(n, 1 / sr)
    split = torch.sigmoid((f - 4000.0) / 500.0)
    high = torch.fft.irfft(spec * split, n).numpy()
    low = noise - high
    rt60_hi = rt60 * float(rng.uniform(0.6, 0.9))
    k = 3 * math.log(10)
    tail = low * np.exp(-k * t / rt60) + high * np.exp(-k * t / rt60_hi)
    onset = float(rng.uniform(0.002, 0.008))
    ramp = np.clip((t - onset) / 0.005, 0.0, 1.0)
    tail *= ramp
    # Early reflections: sparse signed impulses, weaker with delay.
    early = np.zeros(n, np.float32)
    n_ref = int(rng.integers(3, 11))
    delays = rng.uniform(0.003, 0.04, n_ref)
    idx = np.minimum((delays * sr).astype(np.int64), n - 1)
    amps = rng.uniform(0.3, 0.9, n_ref) * np.exp(-k * delays / rt60) * rng.choice([-1.0, 1.0], n_ref)
    np.add.at(early, idx, amps.astype(np.float32))
    # Scale the tail so that it carries most of the reverberant energy, then
    # the whole reverberant part to the requested DRR.
    e_early = float(np.sum(early**2))
    e_tail = float(np.sum(tail**2)) + 1e-12
    tail *= math.sqrt(max(e_early, 1e-3) * 4.0 / e_tail)
    rev = early + tail
    e_rev = float(np.sum(rev**2)) + 1e-12
    rev *= math.sqrt(10 ** (-drr_db / 10) / e_rev)  # direct energy is 1
    rev[0] += 1.0
    return rev.astype(np.float32)


def reverberate(x: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Convolve with `rir` (FFT) and keep the input length; direct path at lag 0.

    The energy is restored to the input's afterwards.
    """
    x = np.asarray(x, dtype=np.float32)
    L = len(x)
    if L == 0:
        return x
    nfft = _fast_len(L + len(rir) - 1)
    Y = torch.fft.rfft(_t(x), nfft) * torch.fft.rfft(_t(rir), nfft)
    y = torch.fft.irfft(Y, nfft)[:L].numpy()
    # Match the total energy: the tail fills pauses, so matching the active
    # level instead would push the speech itself up.
    ex = float(np.sum(np.square(x, dtype=np.float64)))
    ey = float(np.sum(np.square(y, dtype=np.float64)))
    if ex > 0 and ey > 0:
        y = y * np.float32(math.sqrt(ex / ey))
    return y


# --------------------------------------------------------------------------- #
# noise                                                                       #
# --------------------------------------------------------------------------- #


def _colored_noise(rng: np.random.Generator, n: int, exponent: float, sr: int) -> np.ndarray:
    """Gaussian noise with power spectrum ~ 1 / f**exponent (flat below 20 Hz)."""
    nfft = _fast_len(n, 2)
    nb = nfft // 2 + 1
    re = rng.standard_normal(nb, dtype=np.float32)
    im = rng.standard_normal(nb, dtype=np.float32)
    f = np.maximum(np.arange(nb, dtype=np.float32) * (sr / nfft), 20.0)
    shape = f ** np.float32(-exponent / 2)
    shape[0] = 0.0  # no DC
    spec = torch.complex(_t(re * shape), _t(im * shape))
    y = torch.fft.irfft(spec, nfft)[:n].numpy()
    return y / np.float32(np.sqrt(np.mean(np.square(y, dtype=np.float64))) + 1e-12)


def _hum(rng: np.random.Generator, n: int, sr: int, f0: float, harmonics: tuple[int, int]) -> np.ndarray:
    """Mains hum: f0 and harmonics with random, roughly decaying amplitudes.

    One second holds an integer number of periods for an integer f0, so it
    is synthesised once and tiled with a random offset.
    """
    n_h = int(rng.integers(harmonics[0], harmonics[1] + 1))
    period_len = sr if float(f0).is_integer() else n
    t = np.arange(period_len, dtype=np.float64) / sr
    h = np.arange(1, n_h + 1)
    h = h[h * f0 < sr / 2]
    slope = rng.uniform(0.5, 2.0)
    amps = rng.uniform(0.3, 1.0, len(h)) / h**slope
    # odd harmonics dominate for transformer/rectifier buzz
    amps[(h % 2) == 0] *= rng.uniform(0.2, 1.0)
    phases = rng.uniform(0, 2 * np.pi, len(h))
    one = (amps[:, None] * np.sin(2 * np.pi * f0 * h[:, None] * t[None, :] + phases[:, None])).sum(0)
    one = one.astype(np.float32)
    off = int(rng.integers(0, period_len))
    y = np.resize(np.roll(one, -off), n)
    return y / np.float32(np.sqrt(np.mean(np.square(y, dtype=np.float64))) + 1e-12)


def _babble(rng: np.random.Generator, n: int, babble: list[np.ndarray], talkers: tuple[int, int]) -> np.ndarray:
    """Sum of 3-6 other utterances, each at unit level +-3 dB, randomly offset and looped."""
    pool = [b for b in babble if len(b) > 0 and np.any(b)]
    if not pool:
        return np.zeros(n, np.float32)
    k = int(rng.integers(talkers[0], talkers[1] + 1))
    out = np.zeros(n, np.float32)
    for _ in range(k):
        u = np.asarray(pool[int(rng.integers(len(pool)))], dtype=np.float32)
        u = u / np.float32(math.sqrt(active_power(u)) + 1e-12)
        off = int(rng.integers(0, len(u)))
        g = np.float32(10 ** (rng.uniform(-3, 3) / 20))
        if len(u) >= n + off:
            out += g * u[off : off + n]
        else:
            out += g * np.resize(np.roll(u, -off), n)
    return out


def make_noise(
    kind: str,
    n: int,
    rng: np.random.Generator,
    sr: int = 16000,
    babble: list[np.ndarray] | None = None,
    cfg: AugmentConfig | None = None,
) -> np.ndarray:
    """Unit-power noise of the given kind ("white", "pink", "brown", "hum", "babble")."""
    cfg = cfg or AugmentConfig(sample_rate=sr)
    if kind == "white":
        return rng.standard_normal(n, dtype=np.float32)
    if kind == "pink":
        return _colored_noise(rng, n, 1.0, sr)
    if kind == "brown":
        return _colored_noise(rng, n, 2.0, sr)
    if kind == "hum":
        return _hum(rng, n, sr, cfg.hum_freq, cfg.hum_harmonics)
    if kind == "babble":
        if not babble:
            raise ValueError("babble noise needs babble utterances")
        b = _babble(rng, n, babble, cfg.babble_talkers)
        p = float(np.mean(np.square(b, dtype=np.float64)))
        return b / np.float32(math.sqrt(p) + 1e-12)
    raise ValueError(f"unknown noise kind {kind!r}")


def add_noise(x: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """x + noise scaled so that active_power(x) / mean_power(noise) = snr_db."""
    ps = active_power(x)
    pn = float(np.mean(np.square(noise, dtype=np.float64)))
    if ps <= 0 or pn <= 0:
        return x
    g = math.sqrt(ps / (pn * 10 ** (snr_db / 10)))
    return (x + np.float32(g) * noise).astype(np.float32, copy=False)


# --------------------------------------------------------------------------- #
# telephone channel                                                           #
# --------------------------------------------------------------------------- #

_TEL_PAD = 1024  # room for the filter's ringing so FFT filtering is not circular


def _tel_response(nfft: int, sr: int, band: tuple[float, float]) -> torch.Tensor:
    """Zero-phase band-pass: raised-cosine edges 200->lo and hi->hi+200 Hz."""
    lo, hi = band
    f = np.arange(nfft // 2 + 1) * (sr / nfft)
    lo_stop = max(lo - 100.0, 0.0)
    hi_stop = hi + 200.0
    r = np.zeros_like(f)
    up = (f >= lo_stop) & (f < lo)
    r[up] = 0.5 - 0.5 * np.cos(np.pi * (f[up] - lo_stop) / (lo - lo_stop))
    r[(f >= lo) & (f <= hi)] = 1.0
    dn = (f > hi) & (f < hi_stop)
    r[dn] = 0.5 + 0.5 * np.cos(np.pi * (f[dn] - hi) / (hi_stop - hi))
    return torch.from_numpy(r.astype(np.float32))


def telephone_bandlimit(
    x: np.ndarray, sr: int = 16000, band: tuple[float, float] = (300.0, 3400.0)
) -> np.ndarray:
    """Band-pass `x` to `band` and decimate to 8 kHz (one FFT each way)."""
    x = np.asarray(x, dtype=np.float32)
    m = sr // 8000
    if m * 8000 != sr:
        raise ValueError("sample rate must be a multiple of 8000")
    L = len(x)
    n8 = -(-L // m)
    nfft8 = _fast_len(n8 + _TEL_PAD, 2)
    nfft = nfft8 * m
    X = torch.fft.rfft(_t(x), nfft)[: nfft8 // 2 + 1]
    y = torch.fft.irfft(X * _tel_response(nfft8, 8000, band), nfft8) * (1.0 / m)
    return y[:n8].numpy()


def telephone_upsample(
    x8: np.ndarray, out_len: int, sr: int = 16000, band: tuple[float, float] = (300.0, 3400.0)
) -> np.ndarray:
    """Interpolate an 8 kHz signal to `sr`, band-limited to `band` (receive filter)."""
    x8 = np.asarray(x8, dtype=np.float32)
    m = sr // 8000
    nfft8 = _fast_len(max(len(x8), -(-out_len // m)) + _TEL_PAD, 2)
    nfft = nfft8 * m
    X = torch.fft.rfft(_t(x8), nfft8) * _tel_response(nfft8, 8000, band)
    full = torch.zeros(nfft // 2 + 1, dtype=X.dtype)
    full[: len(X)] = X
    y = torch.fft.irfft(full, nfft) * float(m)
    return y[:out_len].numpy()


def g711_roundtrip(x8: np.ndarray, law: str) -> np.ndarray:
    """Quantise float samples to int16, G.711-encode and decode ("mu" or "a")."""
    pcm = np.clip(np.round(np.asarray(x8, dtype=np.float32) * 32768.0), -32768, 32767).astype(np.int16)
    if law == "mu":
        out = g711.mulaw_decode(g711.mulaw_encode(pcm))
    elif law == "a":
        out = g711.alaw_decode(g711.alaw_encode(pcm))
    else:
        raise ValueError(f"law must be 'mu' or 'a', got {law!r}")
    return out.astype(np.float32) * np.float32(1 / 32768)


def telephone_channel(
    x: np.ndarray,
    law: str,
    sr: int = 16000,
    band: tuple[float, float] = (300.0, 3400.0),
    return_narrowband: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Band-pass, 8 kHz, G.711 `law` round trip, back to `sr` (same length)."""
    x = np.asarray(x, dtype=np.float32)
    nb = g711_roundtrip(telephone_bandlimit(x, sr, band), law)
    y = telephone_upsample(nb, len(x), sr, band)
    return (y, nb) if return_narrowband else y


# --------------------------------------------------------------------------- #
# the chain                                                                   #
# --------------------------------------------------------------------------- #


class Augmenter:
    """Applies the configured effects in the order speed -> pseudo-speaker ->
    reverb -> noise -> telephone -> gain, each with its own probability.

    ``__call__`` returns the waveform and records ``last_speed_factor`` and
    ``last_applied``; ``apply`` returns an ``AugmentResult`` with both.
    """

    def __init__(self, cfg: AugmentConfig | None = None):
        self.cfg = cfg or AugmentConfig()
        self.last_speed_factor = 1.0
        self.last_applied: list[str] = []

    def __call__(
        self,
        wav: np.ndarray,
        rng: np.random.Generator,
        babble: list[np.ndarray] | None = None,
    ) -> np.ndarray:
        res = self.apply(wav, rng, babble)
        return res.wav

    def apply(
        self,
        wav: np.ndarray,
        rng: np.random.Generator,
        babble: list[np.ndarray] | None = None,
    ) -> AugmentResult:
        cfg = self.cfg
        sr = cfg.sample_rate
        x = np.asarray(wav, dtype=np.float32)
        if x.ndim != 1:
            raise ValueError(f"expected a mono 1-D waveform, got shape {x.shape}")
        applied: list[str] = []
        speed = 1.0
        if x.size == 0:
            self.last_speed_factor, self.last_applied = speed, applied
            return AugmentResult(x.copy(), speed, applied)

        if cfg.p_speed > 0 and rng.random() < cfg.p_speed:
            speed = float(cfg.speeds[int(rng.integers(len(cfg.speeds)))])
            if speed != 1.0:
                x = speed_perturb(x, speed)
                applied.append(f"speed={speed:g}")

        if cfg.p_pseudo_speaker > 0 and rng.random() < cfg.p_pseudo_speaker:
            vtl = float(rng.uniform(*cfg.vtl_range))
            pitch = 1.0
            if rng.random() < cfg.p_pitch:
                pitch = 2.0 ** (float(rng.uniform(*cfg.pitch_semitones)) / 12.0)
            x = pseudo_speaker(x, vtl, pitch)
            applied.append(f"speaker(vtl={vtl:.3f},pitch={pitch:.3f})")

        if cfg.p_reverb > 0 and rng.random() < cfg.p_reverb:
            rt60 = float(rng.uniform(*cfg.rt60_range))
            drr = float(rng.uniform(*cfg.drr_db_range))
            x = reverberate(x, synth_rir(rng, rt60, sr, drr))
            applied.append(f"reverb(rt60={rt60:.2f},drr={drr:.1f})")

        if cfg.p_noise > 0 and rng.random() < cfg.p_noise:
            kinds = [(k, w) for k, w in cfg.noise_weights if w > 0 and (k != "babble" or babble)]
            if kinds:
                w = np.array([w for _, w in kinds], dtype=np.float64)
                kind = kinds[int(rng.choice(len(kinds), p=w / w.sum()))][0]
                lo, hi = cfg.babble_snr_db_range if kind == "babble" else cfg.snr_db_range
                snr = float(rng.uniform(lo, hi))
                noise = make_noise(kind, len(x), rng, sr, babble, cfg)
                x = add_noise(x, noise, snr)
                applied.append(f"noise({kind},snr={snr:.1f})")

        if cfg.p_telephone > 0 and rng.random() < cfg.p_telephone:
            law = "a" if rng.random() < cfg.p_alaw else "mu"
            x = telephone_channel(x, law, sr, cfg.telephone_band)
            applied.append(f"telephone({law}-law)")

        if cfg.p_gain > 0 and rng.random() < cfg.p_gain:
            g = float(rng.uniform(*cfg.gain_db_range))
            x = x * np.float32(10 ** (g / 20))
            applied.append(f"gain={g:.1f}dB")

        x = np.clip(np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0), -1.0, 1.0).astype(np.float32, copy=False)
        self.last_speed_factor = speed
        self.last_applied = applied
        return AugmentResult(x, speed, applied)


# --------------------------------------------------------------------------- #
# SpecAugment                                                                 #
# --------------------------------------------------------------------------- #


def spec_augment(
    feats: torch.Tensor,
    rng: np.random.Generator,
    num_t_mask: int = 2,
    max_t: int = 50,
    num_f_mask: int = 2,
    max_f: int = 10,
    fill: str = "zero",
) -> torch.Tensor:
    """Time and frequency masking of a (T, F) feature matrix (WeNet ``spec_aug``).

    Each of the `num_t_mask` time masks starts at a uniform frame and covers
    1..`max_t` frames (clipped at the end); likewise `num_f_mask` frequency
    masks of 1..`max_f` bins.  Masks may overlap.  `fill` is "zero" (WeNet)
    or "mean" (the per-bin mean over time of the unmasked input).  Returns a
    new tensor; the input is not modified.
    """
    if feats.dim() != 2:
        raise ValueError(f"expected (T, F) features, got shape {tuple(feats.shape)}")
    if fill not in ("zero", "mean"):
        raise ValueError("fill must be 'zero' or 'mean'")
    y = feats.clone()
    T, F = y.shape
    value = feats.mean(dim=0) if fill == "mean" and T > 0 else None
    if T > 0:
        for _ in range(num_t_mask):
            start = int(rng.integers(0, T))
            end = min(T, start + int(rng.integers(1, max_t + 1)))
            y[start:end, :] = 0.0 if value is None else value
    if F > 0:
        for _ in range(num_f_mask):
            start = int(rng.integers(0, F))
            end = min(F, start + int(rng.integers(1, max_f + 1)))
            y[:, start:end] = 0.0 if value is None else value[start:end]
    return y
