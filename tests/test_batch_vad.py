"""Segmentation of long audio: the region rules on given probabilities, the energy and
silero detectors, silero's batched pieces, and the long-form eval files, whose segments
found must match the reference sentence times within 0.5 s."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from asr.audio import read_audio
from asr.batch.vad import RATE, WINDOW, Region, VadOptions, segment, silero_available, speech_probs, speech_regions

SHARED = Path(__file__).resolve().parents[2] / "shared"
LONG = SHARED / "data" / "real_zh" / "eval" / "manifest_longform.jsonl"
W = WINDOW / RATE  # 32 ms


def probs_from(runs: list[tuple[float, float]], total_s: float) -> np.ndarray:
    p = np.full(int(total_s / W), 0.05, dtype=np.float32)
    for a, b in runs:
        p[int(a / W) : int(b / W)] = 0.95
    return p


def test_regions_follow_pauses_with_padding():
    p = probs_from([(1.0, 3.0), (3.1, 4.0), (6.0, 6.1), (8.0, 9.0)], 10.0)
    opts = VadOptions(min_silence_ms=300, speech_pad_ms=200, min_speech_ms=250)
    regions = speech_regions(p, int(10.0 * RATE), opts)
    got = [(round(r.start_s, 2), round(r.end_s, 2)) for r in regions]
    # The 0.1 s pause does not split; the 0.1 s blip at 6 s is dropped; 0.2 s padding.
    assert len(got) == 2
    assert abs(got[0][0] - 0.8) < 0.05 and abs(got[0][1] - 4.2) < 0.05
    assert abs(got[1][0] - 7.8) < 0.05 and abs(got[1][1] - 9.2) < 0.05


def test_padding_never_crosses_the_middle_of_a_pause():
    p = probs_from([(1.0, 2.0), (2.4, 3.0)], 4.0)
    regions = speech_regions(p, 4 * RATE, VadOptions(min_silence_ms=300, speech_pad_ms=500))
    assert len(regions) == 2 and regions[0].end <= regions[1].start
    assert abs(regions[0].end_s - 2.2) < 0.05


def test_long_speech_is_cut_at_its_quietest_point():
    p = probs_from([(0.5, 50.0)], 52.0)
    dip = int(14.0 / W)
    p[dip : dip + 3] = 0.4  # above neg_threshold (no pause), but the least speech-like point
    regions = speech_regions(p, 52 * RATE, VadOptions(max_segment_s=20.0))
    assert len(regions) == 3 and all(r.end_s - r.start_s <= 20.0 + 1e-6 for r in regions)
    cut = regions[0].keep_end
    assert cut is not None and abs(cut / RATE - 14.0) < 0.2  # cut in the dip
    # Each piece keeps the tokens of its side of the cut: the kept spans tile the speech, losing no audio ...
    assert regions[1].keep_start == cut and regions[1].keep_end == regions[2].keep_start
    assert regions[0].keep_start is None and regions[2].keep_end is None  # outer sides: the VAD's own padding
    # ... while the model hears 500 ms across each cut, as at a pause.
    assert regions[0].end == cut + 8000 and regions[1].start == cut - 8000
    assert regions[0].start_s == 0.0 and regions[-1].end_s == pytest.approx(50.5, abs=0.05)  # 500 ms padding


def test_default_padding_gives_half_a_second_of_lead_in_where_the_pause_allows():
    # Models read an utterance worse without the ~0.5 s of silence their training clips
    # start with; a pause shorter than two paddings is shared at its middle.
    p = probs_from([(1.0, 3.0), (5.0, 7.0), (7.8, 9.0)], 10.0)
    regions = speech_regions(p, 10 * RATE, VadOptions())
    got = [(round(r.start_s, 2), round(r.end_s, 2)) for r in regions]
    assert len(got) == 3
    assert abs(got[0][0] - 0.5) < 0.05 and abs(got[1][0] - 4.5) < 0.05 and abs(got[0][1] - 3.5) < 0.05
    assert abs(got[1][1] - 7.4) < 0.05 and got[1][1] == got[2][0]


def _bursts(spans: list[tuple[float, float]], total: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = 0.001 * rng.standard_normal(int(total * RATE)).astype(np.float32)
    t = np.arange(x.size) / RATE
    for a, b in spans:
        m = (t >= a) & (t < b)
        x[m] += 0.3 * np.sin(2 * np.pi * 220 * t[m]) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t[m]))
    return x


def test_energy_detector_and_short_files_whole():
    x = _bursts([(1.0, 4.0), (6.0, 9.0), (12.0, 25.0)], 30.0)
    (regions,) = segment([x], VadOptions(method="energy"))
    assert len(regions) >= 3 and all(r.end_s - r.start_s <= 20.0 for r in regions)
    assert abs(regions[0].start_s - 0.5) < 0.1 and abs(regions[1].start_s - 5.5) < 0.1  # 500 ms padding
    short = x[: 10 * RATE]
    assert segment([short], VadOptions(method="energy")) == [[Region(0, short.size)]]  # only_long
    assert len(segment([short], VadOptions(method="energy", only_long=False))[0]) == 2
    (fixed,) = segment([x], VadOptions(method="off"))
    assert fixed[0].start == 0 and fixed[-1].end == x.size and all(r.end_s - r.start_s <= 20.0 for r in fixed)


def _long_form():
    if not LONG.exists():
        pytest.skip(f"shared long-form data not found at {LONG}")
    out = []
    for line in LONG.read_text().splitlines():
        entry = json.loads(line)
        wav = LONG.parent / entry["audio"]
        refs = json.loads(wav.with_suffix(".segments.json").read_text())
        out.append((wav, refs))
    return out


@pytest.mark.parametrize("method", ["silero", "energy"])
def test_long_form_segments_match_the_reference_times(method):
    if method == "silero" and not silero_available():
        pytest.skip("silero-vad is not installed (pip install silero-vad)")
    for wav, refs in _long_form():
        audio, rate = read_audio(wav)
        assert rate == RATE
        (regions,) = segment([audio[0]], VadOptions(method=method))
        assert len(regions) == len(refs), (wav.name, [(r.start_s, r.end_s) for r in regions])
        for r, ref in zip(regions, refs):
            assert abs(r.start_s - ref["start"]) <= 0.5 and abs(r.end_s - ref["end"]) <= 0.5, (wav.name, r, ref)


@pytest.mark.skipif(not silero_available(), reason="silero-vad is not installed (pip install silero-vad)")
def test_silero_pieces_run_in_a_batch_like_one_sequence():
    x = _bursts([(0.5, 3.0), (4.0, 9.0), (10.0, 11.0)], 12.0, seed=3)
    whole = speech_probs([x], "silero", VadOptions(piece_s=60.0))[0]
    pieces = speech_probs([x, x[: 5 * RATE]], "silero", VadOptions(piece_s=2.0, warmup_s=1.0))
    assert pieces[0].shape == whole.shape and pieces[1].shape == (int(np.ceil(5 * RATE / WINDOW)),)
    # After a second of warm-up the recurrent state has settled: the same decisions.
    assert np.mean((pieces[0] > 0.5) == (whole > 0.5)) > 0.97
    n = pieces[1].size - 1  # its last window is cut short (zero-padded)
    np.testing.assert_allclose(pieces[1][:n], pieces[0][:n], atol=1e-5)  # rows are independent
