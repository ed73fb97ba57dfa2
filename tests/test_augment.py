import dataclasses

import numpy as np
import pytest
import torch

from asr import g711
from asr.train import augment as A
from asr.train.augment import AugmentConfig, Augmenter, spec_augment

SR = 16000
OFF = dict(p_speed=0.0, p_pseudo_speaker=0.0, p_reverb=0.0, p_noise=0.0, p_telephone=0.0, p_gain=0.0)


def only(**kw) -> AugmentConfig:
    return AugmentConfig(**{**OFF, **kw})


def sine(freq=440.0, seconds=2.0, amp=0.2, phase=0.3):
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * freq * t + phase)).astype(np.float32)


def voiced(f0=150.0, seconds=2.0, formants=(700.0, 1200.0, 2600.0), seed=0):
    """Harmonic signal with formant-like weights and syllable-rate modulation."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    x = np.zeros_like(t)
    for k in range(1, int(7800 / f0)):
        a = sum(1 / (1 + ((k * f0 - F) / 100) ** 2) for F in formants) + 0.01
        x += a * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi))
    x *= 0.6 + 0.4 * np.sin(2 * np.pi * 3.0 * t)
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def f0_estimate(y):
    """Harmonic-sum F0 estimate (Hz) with 0.25 Hz resolution."""
    y = y.astype(np.float64)
    n = 4 * len(y)
    Y = np.log(np.abs(np.fft.rfft(y * np.hanning(len(y)), n)) + 1e-9)
    df = SR / n
    cands = np.arange(80.0, 300.0, 0.25)
    bins = np.rint(np.outer(cands, np.arange(1, 13)) / df).astype(int)
    return float(cands[np.argmax(Y[bins].sum(axis=1))])


def band_energy_fractions(y, lo, hi):
    P = np.abs(np.fft.rfft(y.astype(np.float64))) ** 2
    f = np.fft.rfftfreq(len(y), 1 / SR)
    return P[f < lo].sum() / P.sum(), P[f > hi].sum() / P.sum()


# --------------------------------------------------------------------------- #


def test_config_is_frozen_and_validated():
    cfg = AugmentConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.p_noise = 0.0  # type: ignore[misc]
    with pytest.raises(ValueError):
        AugmentConfig(p_noise=1.5)
    with pytest.raises(ValueError):
        AugmentConfig(snr_db_range=(20.0, 5.0))
    with pytest.raises(ValueError):
        AugmentConfig(noise_weights=(("rain", 1.0),))


def test_determinism_given_seed():
    x = voiced(seconds=1.5)
    babble = [voiced(f0=f, seconds=1.0, seed=i) for i, f in enumerate((110, 190, 230))]
    cfg = AugmentConfig(p_speed=1.0, p_pseudo_speaker=1.0, p_pitch=1.0, p_reverb=1.0,
                        p_noise=1.0, p_telephone=1.0, p_gain=1.0)
    aug = Augmenter(cfg)
    r1 = aug.apply(x, np.random.default_rng(7), babble)
    r2 = aug.apply(x, np.random.default_rng(7), babble)
    np.testing.assert_array_equal(r1.wav, r2.wav)
    assert r1.applied == r2.applied and r1.speed_factor == r2.speed_factor
    # and __call__ agrees with apply and exposes the speed factor
    y = aug(x, np.random.default_rng(7), babble)
    np.testing.assert_array_equal(y, r1.wav)
    assert aug.last_speed_factor == r1.speed_factor and aug.last_applied == r1.applied
    # a different seed gives a different result; the input is not modified
    r3 = aug.apply(x, np.random.default_rng(8), babble)
    assert r3.wav.shape != r1.wav.shape or not np.array_equal(r3.wav, r1.wav)
    np.testing.assert_array_equal(x, voiced(seconds=1.5))


@pytest.mark.parametrize("kind", ["white", "pink", "brown", "hum", "babble"])
def test_noise_snr_within_requested_range(kind):
    x = sine(seconds=2.0)
    babble = [voiced(f0=f, seconds=s, seed=i) for i, (f, s) in enumerate(((110, 0.7), (190, 1.3), (230, 3.1)))]
    weights = tuple((k, 1.0 if k == kind else 0.0) for k in A.NOISE_TYPES)
    lo, hi = 5.0, 25.0
    cfg = only(p_noise=1.0, noise_weights=weights, snr_db_range=(lo, hi), babble_snr_db_range=(lo, hi))
    aug = Augmenter(cfg)
    snrs = []
    for seed in range(6):
        res = aug.apply(x, np.random.default_rng(seed), babble)
        assert res.applied and res.applied[0].startswith(f"noise({kind}")
        noise = res.wav.astype(np.float64) - x
        snr = 10 * np.log10(np.mean(x.astype(np.float64) ** 2) / np.mean(noise**2))
        assert lo - 0.05 <= snr <= hi + 0.05, (kind, seed, snr)
        snrs.append(snr)
    assert np.ptp(snrs) > 2.0  # the SNR is drawn from the range, not fixed
    # A degenerate range pins the SNR exactly.
    pinned = dataclasses.replace(cfg, snr_db_range=(12.0, 12.0), babble_snr_db_range=(12.0, 12.0))
    res = Augmenter(pinned).apply(x, np.random.default_rng(0), babble)
    noise = res.wav.astype(np.float64) - x
    assert abs(10 * np.log10(np.mean(x.astype(np.float64) ** 2) / np.mean(noise**2)) - 12.0) < 0.05


def test_noise_colours_have_the_right_spectral_tilt():
    rng = np.random.default_rng(0)
    n = 4 * SR
    P = {}
    f = np.fft.rfftfreq(n, 1 / SR)
    for kind in ("white", "pink", "brown"):
        y = A.make_noise(kind, n, rng)
        assert abs(np.mean(y.astype(np.float64) ** 2) - 1.0) < 0.05
        S = np.abs(np.fft.rfft(y)) ** 2
        P[kind] = 10 * np.log10(S[(f > 400) & (f < 800)].mean() / S[(f > 3200) & (f < 6400)].mean())
    # power ratio between octaves 3 apart: 0 dB (white), ~9 dB (pink), ~18 dB (brown)
    assert abs(P["white"]) < 1.5
    assert 6 < P["pink"] < 12
    assert 14 < P["brown"] < 22
    hum = A.make_noise("hum", n, rng)
    S = np.abs(np.fft.rfft(hum)) ** 2
    on = np.isin(np.rint(f).astype(int), np.arange(50, 1000, 50)) & (np.abs(f - np.rint(f)) < 1e-9)
    assert S[on].sum() / S.sum() > 0.99  # energy only at 50 Hz and its harmonics


@pytest.mark.parametrize("law", ["mu", "a"])
def test_telephone_channel_band_and_codec(law):
    rng = np.random.default_rng(3)
    x = (0.1 * rng.standard_normal(3 * SR)).astype(np.float32)  # white: energy everywhere
    cfg = only(p_telephone=1.0, p_alaw=1.0 if law == "a" else 0.0)
    res = Augmenter(cfg).apply(x, np.random.default_rng(0))
    assert res.applied == [f"telephone({law}-law)"]
    y = res.wav
    assert y.shape == x.shape
    below, above = band_energy_fractions(y, 200.0, 3600.0)
    assert below < 1e-4 and above < 1e-4, (below, above)
    in_band = 1 - sum(band_energy_fractions(y, 300.0, 3400.0))
    assert in_band > 0.95
    # Manual chain: band-limit to 8 kHz, G.711 round trip with asr.g711, back to 16 kHz.
    nb = A.telephone_bandlimit(x, SR, (300.0, 3400.0))
    assert len(nb) == len(x) // 2
    pcm = np.clip(np.round(nb * 32768.0), -32768, 32767).astype(np.int16)
    if law == "mu":
        dec = g711.mulaw_decode(g711.mulaw_encode(pcm))
    else:
        dec = g711.alaw_decode(g711.alaw_encode(pcm))
    manual = A.telephone_upsample(dec.astype(np.float32) / 32768.0, len(x), SR, (300.0, 3400.0))
    np.testing.assert_allclose(y, manual, rtol=0, atol=1e-7)
    # The narrowband signal really is G.711-quantised (and differs from the input).
    y2, narrow = A.telephone_channel(x, law, SR, return_narrowband=True)
    np.testing.assert_array_equal(y2, y)
    table = g711.MULAW_DECODE_TABLE if law == "mu" else g711.ALAW_DECODE_TABLE
    assert np.all(np.isin(np.rint(narrow * 32768).astype(np.int32), table))
    qnoise = 10 * np.log10(np.sum(nb.astype(np.float64) ** 2) / np.sum((narrow - nb).astype(np.float64) ** 2))
    assert 30 < qnoise < 45  # G.711 is ~38 dB SNR, not transparent


def test_telephone_laws_differ_and_keep_speech_band():
    x = voiced(seconds=1.0)
    ymu = A.telephone_channel(x, "mu")
    ya = A.telephone_channel(x, "a")
    assert not np.array_equal(ymu, ya)
    # A 1 kHz tone passes with its level, a 100 Hz and a 3.8 kHz one do not.
    for freq, passes in ((1000.0, True), (100.0, False), (3800.0, False)):
        s = sine(freq, seconds=1.0, amp=0.3)
        out = A.telephone_channel(s, "a")[SR // 4 : -SR // 4]
        ratio = np.sqrt(np.mean(out.astype(np.float64) ** 2) / np.mean(s.astype(np.float64) ** 2))
        assert (0.9 < ratio < 1.1) if passes else ratio < 0.02, (freq, ratio)


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_speed_perturbation_changes_length_and_pitch_by_factor(factor):
    x = sine(300.0, seconds=2.0)
    aug = Augmenter(only(p_speed=1.0, speeds=(factor,)))
    res = aug.apply(x, np.random.default_rng(0))
    assert res.speed_factor == factor and aug.last_speed_factor == factor
    assert abs(len(res.wav) - len(x) / factor) <= 1
    Y = np.abs(np.fft.rfft(res.wav * np.hanning(len(res.wav)), 8 * len(res.wav)))
    peak = np.argmax(Y) * SR / (8 * len(res.wav))
    assert abs(peak - 300.0 * factor) < 1.0
    # other effects never change the duration
    others = AugmentConfig(p_speed=0.0, p_pseudo_speaker=1.0, p_pitch=1.0, p_reverb=1.0,
                           p_noise=1.0, p_telephone=1.0, p_gain=1.0)
    r2 = Augmenter(others).apply(x, np.random.default_rng(1))
    assert len(r2.wav) == len(x) and r2.speed_factor == 1.0


def _t20_rt60(tail):
    """RT60 from the T20 slope (-5 .. -25 dB) of the Schroeder decay curve."""
    e = np.cumsum((tail.astype(np.float64) ** 2)[::-1])[::-1]
    edb = 10 * np.log10(e / e[0] + 1e-30)
    i5, i25 = np.argmax(edb < -5), np.argmax(edb < -25)
    return 3.0 * (i25 - i5) / SR


def test_reverb_tail_grows_with_rt60():
    burst_len = SR // 10
    x = np.zeros(int(1.6 * SR), np.float32)
    x[:burst_len] = 0.1 * np.random.default_rng(5).standard_normal(burst_len)
    dry_tail = np.sum(x[burst_len:] ** 2)
    assert dry_tail == 0
    est, tail_frac = [], []
    for rt in (0.15, 0.4, 0.8):
        cfg = only(p_reverb=1.0, rt60_range=(rt, rt), drr_db_range=(3.0, 3.0))
        vals, fracs = [], []
        for seed in range(3):
            y = Augmenter(cfg).apply(x, np.random.default_rng(seed)).wav
            assert len(y) == len(x)
            # level is normalised back to the input's
            assert abs(np.sum(y.astype(np.float64) ** 2) / np.sum(x.astype(np.float64) ** 2) - 1) < 1e-3
            vals.append(_t20_rt60(y[burst_len:]))
            fracs.append(np.sum(y[burst_len:].astype(np.float64) ** 2) / np.sum(y.astype(np.float64) ** 2))
        est.append(float(np.mean(vals)))
        tail_frac.append(float(np.mean(fracs)))
        assert 0.5 * rt < est[-1] < 1.5 * rt, (rt, est[-1])
    assert est[0] < est[1] < est[2], est
    assert tail_frac[0] < tail_frac[1] < tail_frac[2], tail_frac
    assert tail_frac[0] > 1e-3


def test_synth_rir_structure():
    h = A.synth_rir(np.random.default_rng(0), 0.5, SR, drr_db=6.0)
    assert len(h) == int(0.5 * SR)
    assert np.argmax(np.abs(h)) == 0  # direct path first and strongest
    drr = 10 * np.log10(h[0] ** 2 / np.sum(h[1:].astype(np.float64) ** 2))
    assert abs(drr - 6.0) < 0.5  # rev part scaled before the direct impulse is added


def test_pseudo_speaker_shifts_pitch_and_keeps_duration():
    x = voiced(f0=150.0, seconds=2.0)
    assert abs(f0_estimate(x) - 150.0) < 0.5
    for pitch in (0.9, 1.12):
        y = A.pseudo_speaker(x, vtl=pitch, pitch=pitch)
        assert len(y) == len(x)
        assert abs(f0_estimate(y) / 150.0 - pitch) < 0.01, (pitch, f0_estimate(y))
        assert abs(A.active_power(y) / A.active_power(x) - 1) < 0.01
    # formant warp alone leaves F0 where it was
    y = A.pseudo_speaker(x, vtl=1.15, pitch=1.0)
    assert abs(f0_estimate(y) - 150.0) < 0.5


def test_formant_warp_moves_resonances():
    rng = np.random.default_rng(2)
    n = 2 * SR
    f = np.fft.rfftfreq(n, 1 / SR)
    X = np.fft.rfft(rng.standard_normal(n))
    x = np.fft.irfft(X * (1 / (1 + ((f - 1000) / 100) ** 2) + 0.01), n).astype(np.float32)
    x /= 3 * np.abs(x).max()

    def peak(y):
        # Welch spectrum (7.8 Hz bins) smoothed over +-35 Hz, then the maximum
        fr = np.lib.stride_tricks.sliding_window_view(y, 2048)[::512] * np.hanning(2048)
        P = np.mean(np.abs(np.fft.rfft(fr)) ** 2, axis=0)
        P = np.convolve(P, np.ones(9) / 9, mode="same")
        ff = np.fft.rfftfreq(2048, 1 / SR)
        m = (ff > 600) & (ff < 1500)
        return ff[m][np.argmax(P[m])]

    assert abs(peak(x) - 1000) < 25
    assert abs(peak(A.formant_warp(x, 1.15)) - 1150) < 60
    assert abs(peak(A.formant_warp(x, 0.85)) - 850) < 60


def test_wsola_changes_duration_not_pitch():
    x = sine(220.0, seconds=1.0)
    for out_len in (int(0.85 * SR), int(1.2 * SR)):
        y = A.wsola_stretch(x, out_len)
        assert len(y) == out_len
        mid = y[SR // 10 : -SR // 10]
        Y = np.abs(np.fft.rfft(mid * np.hanning(len(mid)), 8 * len(mid)))
        assert abs(np.argmax(Y) * SR / (8 * len(mid)) - 220.0) < 1.0
        # waveform continuity: the stretched sine keeps its amplitude
        assert abs(np.sqrt(np.mean(mid**2)) - 0.2 / np.sqrt(2)) < 0.01


def test_gain_range_and_clipping():
    x = sine(seconds=0.5, amp=0.5)
    aug = Augmenter(only(p_gain=1.0))
    gains = []
    for seed in range(20):
        y = aug(x, np.random.default_rng(seed))
        g = 20 * np.log10(np.max(np.abs(y)) / 0.5)
        gains.append(g)
        assert -20.05 <= g <= 6.05 and np.max(np.abs(y)) <= 1.0
    assert min(gains) < -10 and max(gains) > 0
    loud = Augmenter(only(p_gain=1.0, gain_db_range=(6.0, 6.0)))(sine(amp=0.9, seconds=0.2), np.random.default_rng(0))
    assert np.max(np.abs(loud)) == 1.0  # clipped


def test_output_finite_and_bounded_default_chain():
    aug = Augmenter()  # default probabilities, everything possible
    rng = np.random.default_rng(11)
    babble = [voiced(f0=f, seconds=0.8, seed=i) for i, f in enumerate((120, 180, 240, 100))]
    inputs = [
        voiced(seconds=1.0),
        np.zeros(SR // 2, np.float32),  # digital silence (TTS padding)
        np.sign(sine(200.0, seconds=0.5, amp=1.0)),  # full-scale square wave
        (0.05 * rng.standard_normal(300)).astype(np.float32),  # shorter than any frame
        np.zeros(0, np.float32),
    ]
    for x in inputs:
        for _ in range(6):
            res = aug.apply(x, rng, babble)
            y = res.wav
            assert y.dtype == np.float32 and y.ndim == 1
            assert np.all(np.isfinite(y)) and np.max(np.abs(y), initial=0.0) <= 1.0
            assert abs(len(y) - len(x) / res.speed_factor) <= 1
    # all effects on, a loud input
    full = AugmentConfig(p_speed=1.0, p_pseudo_speaker=1.0, p_pitch=1.0, p_reverb=1.0,
                         p_noise=1.0, p_telephone=1.0, p_gain=1.0)
    y = Augmenter(full)(np.sign(sine(200.0, seconds=0.5, amp=1.0)), rng, babble)
    assert np.all(np.isfinite(y)) and np.max(np.abs(y)) <= 1.0


def test_default_chain_applies_each_effect_at_its_rate():
    aug = Augmenter()
    rng = np.random.default_rng(0)
    x = voiced(seconds=0.3)
    counts = {"speed": 0, "speaker": 0, "reverb": 0, "noise": 0, "telephone": 0, "gain": 0}
    n = 150
    for _ in range(n):
        for name in aug.apply(x, rng).applied:
            counts[name.split("(")[0].split("=")[0]] += 1
    cfg = aug.cfg
    expect = {"speed": cfg.p_speed * 2 / 3, "speaker": cfg.p_pseudo_speaker, "reverb": cfg.p_reverb,
              "noise": cfg.p_noise, "telephone": cfg.p_telephone, "gain": cfg.p_gain}
    for k, p in expect.items():
        assert abs(counts[k] / n - p) < 0.13, (k, counts[k] / n, p)


# --------------------------------------------------------------------------- #
# SpecAugment


def _runs(mask_1d):
    m = np.concatenate([[False], mask_1d, [False]])
    starts = np.flatnonzero(~m[:-1] & m[1:])
    ends = np.flatnonzero(m[:-1] & ~m[1:])
    return list(zip(starts, ends))


def test_spec_augment_masks_requested_bands():
    T, F = 2000, 400  # large, so that masks rarely overlap
    feats = torch.rand(T, F) + 1.0  # strictly positive, so zeros mark masks
    exact_t = exact_f = 0
    n = 40
    for seed in range(n):
        y = spec_augment(feats, np.random.default_rng(seed), num_t_mask=3, max_t=20, num_f_mask=2, max_f=8)
        assert y.shape == feats.shape
        zero = (y == 0).numpy()
        rows = zero.all(axis=1)
        cols = zero.all(axis=0)
        # every zero lies in a fully masked row or column
        assert np.array_equal(zero, rows[:, None] | cols[None, :])
        t_runs, f_runs = _runs(rows), _runs(cols)
        assert 1 <= len(t_runs) <= 3 and 1 <= len(f_runs) <= 2
        assert all(e - s <= 20 for s, e in t_runs) or len(t_runs) < 3  # overlaps may merge
        assert rows.sum() <= 3 * 20 and cols.sum() <= 2 * 8
        exact_t += len(t_runs) == 3
        exact_f += len(f_runs) == 2
        # untouched elsewhere
        keep = ~zero
        assert torch.equal(y[torch.from_numpy(keep)], feats[torch.from_numpy(keep)])
    assert exact_t >= 0.85 * n and exact_f >= 0.85 * n  # overlaps are rare
    # input not modified
    assert (feats > 0).all()


def test_spec_augment_zero_masks_and_mean_fill():
    feats = torch.randn(100, 40)
    y = spec_augment(feats, np.random.default_rng(0), num_t_mask=0, num_f_mask=0)
    assert torch.equal(y, feats) and y is not feats
    ym = spec_augment(feats, np.random.default_rng(1), num_t_mask=1, max_t=10, num_f_mask=1, max_f=5, fill="mean")
    changed = ~torch.isclose(ym, feats)
    mean = feats.mean(dim=0)
    rows = changed.all(dim=1) | (ym == mean).all(dim=1)
    # masked rows hold the per-bin mean over time
    masked_rows = [t for t in range(100) if torch.equal(ym[t], mean)]
    assert 1 <= len(masked_rows) <= 10 and rows.any()
    cols = [f for f in range(40) if torch.all(ym[:, f] == mean[f])]
    assert 1 <= len(cols) <= 5
    with pytest.raises(ValueError):
        spec_augment(feats[0], np.random.default_rng(0))
