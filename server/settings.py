"""Server settings: one frozen dataclass, built once from command-line flags and the
environment (flag > environment > default).

Every option has a flag `--name-with-dashes` and an environment variable
`TINGXIE_NAME_WITH_UNDERSCORES`; `OPTIONS` is the single table both come from (and
docs/deployment.md lists).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping

from asr.checkpoint import default_model_dir
from asr.config import ConfigError, EndpointConfig
from asr.endpoint import validate_endpoint_config

__all__ = ["Settings", "Option", "OPTIONS", "add_arguments", "ConfigError"]


def _bool(text: str | bool) -> bool:
    if isinstance(text, bool):
        return text
    v = text.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {text!r}")


@dataclass(frozen=True)
class Option:
    name: str  # Settings field
    type: Callable[[str], Any]
    help: str
    choices: tuple[str, ...] | None = None
    multiple: bool = False  # repeatable flag; comma-separated in the environment

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return "TINGXIE_" + self.name.upper()


OPTIONS: tuple[Option, ...] = (
    Option("model", Path, "model directory (default: models/default of the repository)"),
    Option("host", str, "address to listen on"),
    Option("port", int, "TCP port (0: any free port)"),
    Option("device", str, "auto, cpu or cuda[:N]"),
    Option("max_batch", int, "most streams decoded in one model call"),
    Option("max_wait_ms", float, "longest a chunk waits for others to join its batch"),
    Option("max_sessions", int, "concurrent sessions; more connections get HTTP 503"),
    Option("api_key", str, "accepted API key (repeat for several; none: no authentication)", multiple=True),
    Option("metrics_auth", str, "GET /metrics: key (the API key, when keys are configured) or none (open)",
           ("key", "none")),
    Option("max_frame_bytes", int, "largest websocket message accepted (close 1009 above)"),
    Option("max_buffer_s", float, "undecoded audio per session before reading pauses (backpressure)"),
    Option("idle_timeout_s", float, "close a session that sends nothing for this long"),
    Option("overload_s", float, "close sessions (1013) whose audio waited this long for the model"),
    Option("final_pass", str, "final result: full-context re-decoding, the streaming result, or auto (full unless the "
           "engine is behind)", ("auto", "full", "stream")),
    Option("final_pass_max_wait_ms", float, "auto: a final pass that waited this long for the engine gives way to the "
           "streaming result"),
    Option("decoding", str, "CTC search", ("greedy", "prefix_beam")),
    Option("beam", int, "beam size for prefix_beam and rescoring (0: the model's tuned beam with its LM, else 10)"),
    Option("rescoring", _bool, "attention-rescore finals (models with an attention decoder; unset: on for "
                               "models that ship a tuned rescorer, such as the default, off for WeNet imports)"),
    Option("lm", str, "n-gram LM fused into prefix beam search: auto (the model's own, if it ships one), none, or an "
           "ARPA file"),
    Option("chunk_ms", int, "streaming chunk in ms (0: the model's own)"),
    Option("history_ms", int, "attention history kept while streaming, in ms (0: the model's own, usually all)"),
    Option("precision", str, "model compute precision (auto: bf16 on CPUs with native bf16 (AVX512-BF16/AMX), else fp32; bf16/fp16 on CUDA)",
           ("auto", "fp32", "bf16", "fp16")),
    Option("endpoint_silence_ms", int, "trailing silence after speech that ends an utterance"),
    Option("no_speech_ms", int, "silence without speech after which decoding restarts"),
    Option("max_utterance_ms", int, "longest utterance before a final is forced"),
    Option("blank_threshold", float, "a frame is silence when P(blank) exceeds this"),
    Option("vad", str, "silence detection for endpoints: CTC blanks, frame energy, or silero-vad (optional extra)",
           ("ctc", "energy", "silero")),
    Option("threads", int, "torch threads for the model (0: one per CPU core but one)"),
    Option("shutdown_timeout_s", float, "on SIGTERM, time given to sessions to flush their finals"),
    Option("log_level", str, "logging level", ("debug", "info", "warning", "error")),
    Option("http_port", int, "TCP port of the OpenAI-compatible HTTP API, POST /v1/audio/transcriptions (-1: the main "
           "port, 0: any free port)"),
    Option("max_upload_mb", float, "largest file the HTTP API accepts, in MB"),
    # Call-center and compatibility protocols (server/integrations.py, docs/integrations.md).
    Option("twilio_roles", str, "roles of the Twilio tracks, e.g. inbound=customer,outbound=agent"),
    Option("twilio_auth_token", str, "Twilio account auth token: /twilio handshakes must carry a valid "
           "X-Twilio-Signature"),
    Option("audiosocket_port", int, "TCP port for Asterisk AudioSocket (-1: off, 0: any free port)"),
    Option("audiosocket_host", str, "address AudioSocket listens on (it has no credentials: loopback by default)"),
    Option("audiosocket_allow", str, "peer network allowed to connect to AudioSocket, e.g. 10.0.0.0/8 (repeat; "
           "none: any peer that reaches the address)", multiple=True),
    Option("audiosocket_format", str, "what AudioSocket kind 0x10 carries (Dial(AudioSocket/...c(ulaw)) sends ulaw as 0x10)",
           ("slin", "ulaw", "alaw")),
    Option("webhook_url", str, "POST each final, DTMF digit and call end of telephony calls here (needs aiohttp)"),
    # Readable transcripts (docs/protocol.md#transcript-options): defaults of the start options.
    Option("punctuation", _bool, "punctuate finals (the start option punctuation overrides it per session)"),
    Option("itn", _bool, "write spoken numbers as figures in finals and partials (start option itn)"),
    Option("punct_model", str, "punctuation model folder (default: models/punct of the repository)"),
    Option("hotwords", str, "file of hotwords for every session, one phrase a line (optionally 'phrase boost')"),
    Option("hotword_boost", float, "score added per matched unit of a hotword that has no boost of its own"),
    Option("compat", str, "compatible endpoint on a port of its own: wenet=10086, funasr=10095, vosk=2700 (repeat)",
           multiple=True),
)


@dataclass(frozen=True)
class Settings:
    model: Path = Path("models/default")
    host: str = "0.0.0.0"
    port: int = 8000
    device: str = "auto"
    max_batch: int = 32
    max_wait_ms: float = 10.0
    max_sessions: int = 64
    api_key: tuple[str, ...] = ()
    metrics_auth: str = "key"
    max_frame_bytes: int = 1 << 20
    max_buffer_s: float = 30.0
    idle_timeout_s: float = 60.0
    overload_s: float = 10.0
    final_pass: str = "auto"
    final_pass_max_wait_ms: float = 250.0
    decoding: str = "greedy"
    beam: int = 0  # 0: the beam tuned with the model's LM (config.json), else 10
    rescoring: bool | None = None  # None: as the model ships (Whisper-CTC: on; WeNet imports: off)
    lm: str = "auto"
    chunk_ms: int = 0
    history_ms: int = 2560  # bounded attention history: per-step cost stays flat (docs/deployment.md)
    precision: str = "auto"
    endpoint_silence_ms: int = 800
    no_speech_ms: int = 5000
    max_utterance_ms: int = 20000
    blank_threshold: float = 0.8
    vad: str = "ctc"
    threads: int = 0
    shutdown_timeout_s: float = 30.0
    log_level: str = "info"
    http_port: int = -1
    max_upload_mb: float = 25.0
    twilio_roles: str = "inbound=customer,outbound=agent"
    twilio_auth_token: str = ""
    audiosocket_port: int = -1
    audiosocket_host: str = "127.0.0.1"
    audiosocket_allow: tuple[str, ...] = ()
    audiosocket_format: str = "slin"
    webhook_url: str = ""
    compat: tuple[str, ...] = ()
    punctuation: bool = True
    itn: bool = True
    punct_model: str = ""
    hotwords: str = ""
    hotword_boost: float = 2.0
    endpoint: EndpointConfig = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        positive = ("max_batch", "max_sessions", "max_frame_bytes", "max_buffer_s", "idle_timeout_s", "overload_s")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")
        for name in ("beam", "max_wait_ms", "chunk_ms", "history_ms", "threads", "shutdown_timeout_s", "final_pass_max_wait_ms"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0")
        if not 0 <= self.port <= 65535:
            raise ConfigError("port must be 0 to 65535")
        if not -1 <= self.http_port <= 65535 or self.max_upload_mb <= 0:
            raise ConfigError("http_port must be -1 (the main port) to 65535, and max_upload_mb positive")
        for opt in OPTIONS:
            if opt.choices and getattr(self, opt.name) not in opt.choices:
                raise ConfigError(f"{opt.name} must be one of {', '.join(opt.choices)}")
        if not 0 <= self.hotword_boost <= 10:
            raise ConfigError("hotword_boost must be 0 to 10")
        if self.hotwords and not Path(self.hotwords).is_file():
            raise ConfigError(f"hotwords file {self.hotwords} not found")
        if any(not k for k in self.api_key):
            raise ConfigError("API keys must not be empty")
        for net in self.audiosocket_allow:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ConfigError(f"audiosocket_allow {net!r} is not a network (e.g. 10.0.0.0/8)") from None
        endpoint = EndpointConfig(
            blank_threshold=self.blank_threshold,
            silence_without_speech_ms=self.no_speech_ms,
            trailing_silence_ms=self.endpoint_silence_ms,
            max_utterance_ms=self.max_utterance_ms,
        )
        object.__setattr__(self, "endpoint", validate_endpoint_config(endpoint))

    @classmethod
    def from_sources(cls, flags: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> "Settings":
        """flags: parsed flag values (None where a flag was not given); environ: the
        environment (os.environ by default). Raises ConfigError for bad values."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for opt in OPTIONS:
            given = flags.get(opt.name)
            if opt.multiple and given:
                values[opt.name] = tuple(given)
            elif not opt.multiple and given is not None:
                values[opt.name] = given
            elif opt.env in environ:
                raw = environ[opt.env]
                try:
                    if opt.multiple:
                        values[opt.name] = tuple(opt.type(p.strip()) for p in raw.split(",") if p.strip())
                    else:
                        values[opt.name] = opt.type(raw)
                except ValueError as e:
                    raise ConfigError(f"{opt.env}={raw!r}: {e}") from None
        if "model" not in values:
            values["model"] = default_model_dir()  # reads TINGXIE_MODEL itself
        return cls(**values)

    def public(self) -> dict[str, Any]:
        """The settings as plain values, API keys hidden (for logs)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.init}
        out["api_key"] = f"{len(self.api_key)} configured"
        out["twilio_auth_token"] = "set" if self.twilio_auth_token else "not set"
        out["model"] = str(self.model)
        return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per option, default None (so the environment and defaults can apply)."""
    defaults = Settings.__dataclass_fields__
    for opt in OPTIONS:
        default = defaults[opt.name].default
        shown = "" if opt.name in ("model", "api_key", "twilio_auth_token") or default is None else f" (default {default})"
        kw: dict[str, Any] = dict(default=None, help=f"{opt.help}{shown}; env {opt.env}")
        if opt.multiple:
            parser.add_argument(opt.flag, action="append", type=opt.type, metavar=opt.name.upper(), **kw)
        elif opt.type is _bool:
            parser.add_argument(opt.flag, type=_bool, metavar="BOOL", **kw)
        else:
            parser.add_argument(opt.flag, type=opt.type, choices=opt.choices, **kw)
