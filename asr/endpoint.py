"""Endpoint detection: when does an utterance end inside a continuing stream?

A pure rule over numbers the caller measures after each decoded chunk, as WeNet's
`ctc_endpoint.h` does it (three rules, the first that fires wins):

1. `no_speech`: nothing recognised yet and `silence_without_speech_ms` of trailing
   silence: the utterance is dropped (no final) and decoding restarts, so a long silence
   never grows the attention cache.
2. `trailing_silence`: something recognised and `trailing_silence_ms` of trailing silence
   after it: the utterance is final (800 ms suits dialogue; WeNet uses 1000 ms).
3. `max_length`: the utterance reached `max_utterance_ms` of audio: final, whatever is
   heard, which bounds memory and latency for speech without pauses.

Trailing silence comes from the CTC blank posteriors (`Stream.trailing_blank_s`: frames
whose P(blank) > `EndpointConfig.blank_threshold`) or from a voice activity detector
(`asr.vad`). No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import ConfigError, EndpointConfig

__all__ = ["Endpoint", "detect_endpoint", "validate_endpoint_config", "NO_SPEECH", "TRAILING_SILENCE", "MAX_LENGTH"]

NO_SPEECH = "no_speech"
TRAILING_SILENCE = "trailing_silence"
MAX_LENGTH = "max_length"


@dataclass(frozen=True)
class Endpoint:
    """rule: which rule fired; final: whether the utterance yields a final result."""

    rule: str
    final: bool


def validate_endpoint_config(cfg: EndpointConfig) -> EndpointConfig:
    """Raise ConfigError for values that cannot work; return cfg unchanged otherwise.

    Every rule needs a positive time: the maximum utterance length in particular is what
    keeps a stream's memory flat however long it runs."""
    if not 0.0 < cfg.blank_threshold < 1.0:
        raise ConfigError("endpoint blank_threshold must be within (0, 1)")
    for name in ("silence_without_speech_ms", "trailing_silence_ms", "max_utterance_ms"):
        if getattr(cfg, name) <= 0:
            raise ConfigError(f"endpoint {name} must be positive")
    return cfg


def detect_endpoint(
    cfg: EndpointConfig, trailing_silence_s: float, utterance_s: float, has_speech: bool
) -> Endpoint | None:
    """The endpoint rule that fires, or None.

    trailing_silence_s: silence at the end of what has been decoded; utterance_s: audio
    decoded since the utterance started; has_speech: whether anything was recognised in
    this utterance (a non-empty partial result).
    """
    # Rounded to microseconds: times are sums of frame durations (0.04 * 20 != 0.8).
    trailing_ms = round(trailing_silence_s * 1000.0, 3)
    utterance_ms = round(utterance_s * 1000.0, 3)
    if not has_speech and trailing_ms >= cfg.silence_without_speech_ms:
        return Endpoint(NO_SPEECH, final=False)
    if has_speech and trailing_ms >= cfg.trailing_silence_ms:
        return Endpoint(TRAILING_SILENCE, final=True)
    if utterance_ms >= cfg.max_utterance_ms:
        return Endpoint(MAX_LENGTH, final=has_speech)
    return None
