"""Endpoint rules (WeNet's three, dialogue defaults) and the optional silero VAD."""

import numpy as np
import pytest
import torch

from asr.audio import read_audio
from asr.config import ConfigError, EndpointConfig
from asr.endpoint import MAX_LENGTH, NO_SPEECH, TRAILING_SILENCE, Endpoint, detect_endpoint, validate_endpoint_config
from asr.vad import EnergyVad, SileroVad, silero_available

from .conftest import ESPEAK, espeak

CFG = EndpointConfig()  # 800 ms after speech, 5 s without speech, 20 s maximum


def test_defaults_are_dialogue_friendly():
    assert (CFG.trailing_silence_ms, CFG.silence_without_speech_ms, CFG.max_utterance_ms) == (800, 5000, 20000)


@pytest.mark.parametrize(
    "trailing, length, speech, expected",
    [
        (0.0, 1.0, False, None),
        (0.79, 3.0, True, None),
        (0.8, 3.0, True, Endpoint(TRAILING_SILENCE, True)),
        (2.0, 3.0, True, Endpoint(TRAILING_SILENCE, True)),
        (0.8, 3.0, False, None),  # silence without speech needs the longer rule
        (4.99, 6.0, False, None),
        (5.0, 6.0, False, Endpoint(NO_SPEECH, False)),
        (0.0, 19.99, True, None),
        (0.0, 20.0, True, Endpoint(MAX_LENGTH, True)),
        (0.0, 25.0, False, Endpoint(MAX_LENGTH, False)),  # long noise without text: reset, no final
        (5.0, 25.0, True, Endpoint(TRAILING_SILENCE, True)),  # silence rule wins over length
    ],
)
def test_rules(trailing, length, speech, expected):
    assert detect_endpoint(CFG, trailing, length, speech) == expected


def test_custom_times():
    cfg = EndpointConfig(trailing_silence_ms=300, silence_without_speech_ms=1000, max_utterance_ms=4000)
    assert detect_endpoint(cfg, 0.3, 1.0, True).rule == TRAILING_SILENCE
    assert detect_endpoint(cfg, 1.0, 1.0, False).rule == NO_SPEECH
    assert detect_endpoint(cfg, 0.0, 4.0, True).rule == MAX_LENGTH


@pytest.mark.parametrize(
    "kw",
    [dict(blank_threshold=1.0), dict(blank_threshold=0.0), dict(trailing_silence_ms=0),
     dict(silence_without_speech_ms=-1), dict(max_utterance_ms=0)],
)
def test_invalid_configs(kw):
    with pytest.raises(ConfigError):
        validate_endpoint_config(EndpointConfig(**kw))
    assert validate_endpoint_config(CFG) is CFG


needs_silero = pytest.mark.skipif(not silero_available(), reason="silero-vad is not installed (pip install silero-vad)")


@needs_silero
def test_silero_vad_tracks_trailing_silence(tmp_path):
    if ESPEAK is None:
        pytest.skip("espeak-ng is not installed")
    audio, rate = read_audio(espeak("jin1 tian1 tian1 qi4 hen3 hao3", tmp_path / "s.wav"))
    speech = audio[0]
    vad = SileroVad(rate)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one 32 ms window per call: threads only add overhead
    try:
        check_vad(vad, speech, rate)
    finally:
        torch.set_num_threads(threads)


def check_vad(vad, speech, rate):
    vad.accept(speech)
    assert vad.speech_windows > 0
    spoken_end_silence = vad.trailing_silence_s
    assert spoken_end_silence < 0.5
    vad.accept(np.zeros(rate, dtype=np.float32))  # one second of silence
    assert vad.trailing_silence_s >= spoken_end_silence + 0.9
    vad.accept(speech[: rate // 2])
    assert vad.trailing_silence_s < 0.5


def test_energy_vad_tracks_trailing_silence():
    rate = 8000
    vad = EnergyVad(rate, threshold_db=-40.0)
    tone = 0.3 * np.sin(np.arange(rate) * 2 * np.pi * 300 / rate).astype(np.float32)
    vad.accept(tone[:1234])
    assert vad.trailing_silence_s == 0.0 and vad.speech_frames > 0
    for piece in np.array_split(np.full(rate, 1e-3, np.float32), 7):  # -60 dBFS "silence", odd pieces
        vad.accept(piece)
    assert vad.trailing_silence_s == pytest.approx(1.0, abs=0.03)
    vad.accept(tone[:400])
    assert vad.trailing_silence_s < 0.03


def test_silence_is_measured_up_to_any_decoded_time():
    """Detectors run ahead of the decoder; the endpoint asks about the decoded frontier."""
    rate = 16000
    vad = EnergyVad(rate)  # 20 ms frames
    tone = 0.3 * np.sin(np.arange(rate // 2) * 2 * np.pi * 300 / rate).astype(np.float32)
    vad.accept(np.concatenate([tone, np.zeros(rate, np.float32), tone]))  # speech 0-0.5, silence 0.5-1.5
    assert vad.trailing_silence_at(0.4) == 0.0
    assert vad.trailing_silence_at(1.3) == pytest.approx(0.8)
    assert vad.trailing_silence_at(1.5) == pytest.approx(1.0)
    assert vad.trailing_silence_at(1.7) == 0.0
    assert vad.trailing_silence_at(99.0) == vad.trailing_silence_s == 0.0
