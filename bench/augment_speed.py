"""Real-time factor of each augmentation effect and of the default chain.

    python bench/augment_speed.py [--seconds 10] [--repeats 20] [--threads 1]

Runs on one core by default (torch.set_num_threads(1); numpy FFT and
np.correlate are single-threaded).  The input is 10 s of a synthetic voiced
signal with a gliding F0, formant-like harmonic weights and syllable-rate
amplitude modulation; babble draws from five other such signals.  RTF is
reported as audio seconds processed per wall-clock second (higher is faster).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from asr.train.augment import NOISE_TYPES, AugmentConfig, Augmenter

SR = 16000


def synth_speech(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    f0 = rng.uniform(100, 220) * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.3, 1.0) * t))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    formants = rng.uniform([500, 1100, 2300], [900, 1800, 3200])
    x = np.zeros(n)
    for k in range(1, 40):
        fk = k * f0.mean()
        if fk > SR / 2 - 500:
            break
        a = sum(1 / (1 + ((fk - F) / 120) ** 2) for F in formants) + 0.02
        x += a * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    env = np.clip(np.sin(2 * np.pi * rng.uniform(2.5, 4.5) * t), 0, None) ** 1.5
    x = x * env + 0.003 * rng.standard_normal(n)
    return (0.5 * x / np.abs(x).max()).astype(np.float32)


def only(effect: str, **extra) -> AugmentConfig:
    off = dict(p_speed=0.0, p_pseudo_speaker=0.0, p_reverb=0.0, p_noise=0.0, p_telephone=0.0, p_gain=0.0)
    off.update(extra)
    off[effect] = 1.0
    return AugmentConfig(**off)


def measure(cfg: AugmentConfig, wav: np.ndarray, babble, repeats: int, seed: int = 0) -> tuple[float, float]:
    aug = Augmenter(cfg)
    rng = np.random.default_rng(seed)
    aug(wav, rng, babble)  # warm-up (kernel caches, first-call allocations)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        aug(wav, rng, babble)
        times.append(time.perf_counter() - t0)
    dur = len(wav) / SR
    return dur / float(np.mean(times)), float(np.mean(times)) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    wav = synth_speech(args.seconds, 0)
    babble = [synth_speech(s, 10 + i) for i, s in enumerate((3.0, 4.5, 6.0, 7.5, 12.0))]
    base = AugmentConfig()

    def noise_only(kind: str) -> AugmentConfig:
        w = tuple((k, 1.0 if k == kind else 0.0) for k in NOISE_TYPES)
        return only("p_noise", noise_weights=w)

    cases: list[tuple[str, AugmentConfig]] = [
        ("speed (0.9/1.0/1.1)", only("p_speed")),
        ("speed 1.1 only", only("p_speed", speeds=(1.1,))),
        ("pseudo-speaker, formant warp only", only("p_pseudo_speaker", p_pitch=0.0)),
        ("pseudo-speaker, + pitch (resample+WSOLA)", only("p_pseudo_speaker", p_pitch=1.0)),
        ("pseudo-speaker, default mix", only("p_pseudo_speaker")),
        ("reverb (RT60 0.1-0.8 s)", only("p_reverb")),
        ("noise white", noise_only("white")),
        ("noise pink", noise_only("pink")),
        ("noise brown", noise_only("brown")),
        ("noise hum", noise_only("hum")),
        ("noise babble", noise_only("babble")),
        ("telephone (G.711)", only("p_telephone")),
        ("gain", only("p_gain")),
        ("all effects always on", dataclasses.replace(
            base, p_speed=1.0, p_pseudo_speaker=1.0, p_pitch=1.0, p_reverb=1.0,
            p_noise=1.0, p_telephone=1.0, p_gain=1.0)),
    ]
    print(f"audio {args.seconds:g} s, {args.repeats} repeats, torch threads {torch.get_num_threads()}")
    print(f"{'effect':44s} {'ms/call':>9s} {'x realtime':>11s}")
    for name, cfg in cases:
        rtf, ms = measure(cfg, wav, babble, args.repeats)
        print(f"{name:44s} {ms:9.2f} {rtf:11.0f}")
    # The default chain: random draws decide which effects run, so average
    # over many calls with different draws.
    n_chain = max(args.repeats * 5, 50)
    rtf, ms = measure(base, wav, babble, n_chain, seed=123)
    print(f"{'DEFAULT CHAIN (mean over %d draws)' % n_chain:44s} {ms:9.2f} {rtf:11.0f}")


if __name__ == "__main__":
    main()
