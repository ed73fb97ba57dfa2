"""Configuration dataclasses: one frozen dataclass per concern, validated in one place.

`ModelConfig` and `FeatureConfig` travel with the weights in `config.json`; unknown keys
are errors, so a typo in a model directory never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Mapping, TypeVar

T = TypeVar("T")

DEFAULT_BEAM = 10  # WeNet's runtime default; a model's LM may ship a wider tuned one

SUBSAMPLING = {
    # name: (rate, right_context) in fbank frames, as WeNet defines them.
    "conv2d": (4, 6),
    "conv2d6": (6, 10),
    "conv2d8": (8, 14),
}


class ConfigError(ValueError):
    """A configuration value is missing, unknown or out of range."""


def expand_env(v: Any) -> Any:
    """`${VAR}` in every string of a loaded recipe (nested lists and dicts) from the environment."""
    if isinstance(v, str):
        return os.path.expandvars(v)
    if isinstance(v, list):
        return [expand_env(x) for x in v]
    if isinstance(v, dict):
        return {k: expand_env(x) for k, x in v.items()}
    return v


def from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
    """Build a frozen dataclass from a mapping, rejecting unknown keys."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown keys {unknown}")
    return cls(**data)


@dataclass(frozen=True)
class FeatureConfig:
    """Kaldi-compatible log-mel fbank, as WeNet computes it (int16-scaled input)."""

    sample_rate: int = 16000
    num_mel_bins: int = 80
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    dither: float = 0.0
    # Each log-mel value is at least that of white noise with this standard deviation (in
    # int16 steps); 0 turns the floor off. Digital silence (exact zeros: padded files,
    # muted microphones, telephony comfort gaps) otherwise gives log(0)-floor features
    # far outside anything a model trained with dither has seen, and it stops reading
    # those frames as blank. The floor is a deterministic stand-in for Kaldi's dither 1.0.
    # Imported WeNet models set 0: their front end is kaldi.fbank with dither 0, exactly.
    noise_floor: float = 1.0

    def __post_init__(self) -> None:
        if self.sample_rate != 16000:
            raise ConfigError("models run on 16 kHz features; input is resampled to it")
        if self.num_mel_bins <= 0:
            raise ConfigError("num_mel_bins must be positive")
        if self.noise_floor < 0:
            raise ConfigError("noise_floor must be 0 (off) or positive")

    @property
    def window(self) -> int:
        """Samples per analysis window (400 at 16 kHz)."""
        return int(self.sample_rate * self.frame_length_ms / 1000)

    @property
    def shift(self) -> int:
        """Samples per frame shift (160 at 16 kHz)."""
        return int(self.sample_rate * self.frame_shift_ms / 1000)


@dataclass(frozen=True)
class ModelConfig:
    """Conformer encoder + CTC head. Names follow WeNet's `encoder_conf` where they exist."""

    vocab_size: int
    input_dim: int = 80
    output_size: int = 256
    attention_heads: int = 4
    linear_units: int = 1024
    num_blocks: int = 12
    cnn_module_kernel: int = 15
    input_layer: str = "conv2d"
    causal: bool = True
    cnn_module_norm: str = "layer_norm"
    macaron_style: bool = True
    use_cnn_module: bool = True
    norm_eps: float = 1e-5
    dropout_rate: float = 0.1
    attention_dropout_rate: float = 0.0
    max_positions: int = 5000

    def __post_init__(self) -> None:
        if self.input_layer not in SUBSAMPLING:
            raise ConfigError(f"input_layer must be one of {sorted(SUBSAMPLING)}, got {self.input_layer!r}")
        if self.cnn_module_norm not in ("layer_norm", "batch_norm"):
            raise ConfigError("cnn_module_norm must be layer_norm or batch_norm")
        if self.output_size % self.attention_heads:
            raise ConfigError("output_size must be divisible by attention_heads")
        if self.causal and self.cnn_module_kernel < 2:
            raise ConfigError("a causal convolution needs cnn_module_kernel >= 2")
        if not self.causal and self.cnn_module_kernel % 2 == 0:
            raise ConfigError("a non-causal convolution needs an odd cnn_module_kernel")
        if self.vocab_size < 2:
            raise ConfigError("vocab_size must be at least 2 (blank + one unit)")

    @property
    def subsampling_rate(self) -> int:
        return SUBSAMPLING[self.input_layer][0]

    @property
    def right_context(self) -> int:
        return SUBSAMPLING[self.input_layer][1]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ChunkConfig:
    """Streaming geometry in encoder frames (40 ms each with conv2d subsampling).

    chunk_size 16 = 640 ms of new audio per step; left_chunks -1 keeps all history
    (until an endpoint resets it), n >= 0 keeps the last n chunks of attention cache.
    """

    chunk_size: int = 16
    left_chunks: int = -1

    def __post_init__(self) -> None:
        if self.chunk_size <= 0:
            raise ConfigError("chunk_size must be positive (use full-context decoding otherwise)")
        if self.left_chunks < -1:
            raise ConfigError("left_chunks must be -1 (unlimited) or >= 0")

    @property
    def cache_frames(self) -> int:
        """Attention cache kept between chunks: -1 means all."""
        return -1 if self.left_chunks < 0 else self.chunk_size * self.left_chunks


@dataclass(frozen=True)
class DecodingConfig:
    """CTC search options, and attention rescoring of the final result.

    With `rescoring`, a final result is the CTC prefix-beam n-best (`beam_size`
    hypotheses, whatever `method` says) rescored by the model's attention decoder, as
    WeNet does: score = decoder + ctc_weight * ctc, where decoder = (1 - reverse_weight)
    * left-to-right + reverse_weight * right-to-left (bidirectional decoders only).
    Partial results stay CTC-only. Defaults are WeNet's runtime defaults. A Whisper-CTC
    model rescores with Whisper's decoder at the n-best size and CTC weight tuned with it
    (its config.json), unless `rescoring` is False (`asr.whisper.rescore`).

    `lm`: an n-gram language model over the model's units (ARPA, `asr.lm`) fused into
    prefix beam search (which it implies): hypotheses are ranked by CTC + lm_weight * LM
    + lm_bonus * units. "auto" uses the model directory's LM with its tuned weights (and
    beam), if it ships one; "none" or None decodes without.
    """

    method: str = "greedy"  # greedy | prefix_beam
    beam_size: int | None = None  # None: the beam tuned with the model's LM, else DEFAULT_BEAM
    nbest: int = 1
    blank_penalty: float = 0.0
    rescoring: bool | None = None  # None: the model's default (on where it ships a rescorer: Whisper-CTC)
    ctc_weight: float = 0.5
    reverse_weight: float = 0.0
    lm: str | None = "auto"  # "auto" | "none" (or None) | an ARPA path
    lm_weight: float | None = None  # None: the model's tuned value (else 0.5)
    lm_bonus: float | None = None

    def __post_init__(self) -> None:
        if self.method not in ("greedy", "prefix_beam"):
            raise ConfigError("decoding method must be greedy or prefix_beam")
        if (self.beam_size is not None and self.beam_size < 1) or not 1 <= self.nbest <= (self.beam_size or DEFAULT_BEAM):
            raise ConfigError("need 1 <= nbest <= beam_size")
        if self.ctc_weight < 0:
            raise ConfigError("ctc_weight must be >= 0")
        if not 0.0 <= self.reverse_weight <= 1.0:
            raise ConfigError("reverse_weight must be within [0, 1]")


@dataclass(frozen=True)
class DecoderConfig:
    """Attention decoder used for rescoring (WeNet `transformer` / `bitransformer`).

    Saved with the weights (the `decoder` section of `config.json`). Names follow
    WeNet's `decoder_conf`; `d_model` is the encoder's output_size.
    """

    vocab_size: int
    d_model: int
    sos: int
    eos: int
    kind: str = "bitransformer"  # bitransformer | transformer
    attention_heads: int = 4
    linear_units: int = 2048
    num_blocks: int = 6
    r_num_blocks: int = 0
    normalize_before: bool = True
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        if self.kind not in ("bitransformer", "transformer"):
            raise ConfigError(f"decoder kind must be bitransformer or transformer, got {self.kind!r}")
        if self.d_model % self.attention_heads:
            raise ConfigError("decoder d_model must be divisible by attention_heads")
        if self.num_blocks < 0 or self.r_num_blocks < 0:
            raise ConfigError("decoder num_blocks and r_num_blocks must be >= 0")
        if self.kind == "transformer" and self.r_num_blocks:
            raise ConfigError("a transformer (left-to-right only) decoder has no r_num_blocks")
        if not (0 <= self.sos < self.vocab_size and 0 <= self.eos < self.vocab_size):
            raise ConfigError(f"sos {self.sos} / eos {self.eos} outside the vocabulary of {self.vocab_size}")

    @property
    def bidirectional(self) -> bool:
        return self.kind == "bitransformer"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class EndpointConfig:
    """CTC-blank endpoint rules (WeNet's, with dialogue-friendly defaults). Times in ms."""

    blank_threshold: float = 0.8
    silence_without_speech_ms: int = 5000
    trailing_silence_ms: int = 800
    max_utterance_ms: int = 20000
