"""`tingxie serve` (and `python -m server`): settings from flags and environment, the
recognizer built once and handed to the app."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from typing import Any, Callable

import torch

from asr.checkpoint import ModelDirError
from asr.config import DecodingConfig
from asr.recognizer import Recognizer, command_precision, default_threads, describe_cpu, precision_name
from asr.vad import EnergyVad, SileroVad, silero_available

from .app import App
from .settings import OPTIONS, ConfigError, Settings, add_arguments

__all__ = ["register", "main", "build_recognizer", "build_app"]

DESCRIPTION = (
    "Streaming recognition server: websocket protocol at /v1/stream (docs/protocol.md), "
    "OpenAI-compatible POST /v1/audio/transcriptions, browser page at /, /healthz and /metrics, "
    "all on one port. Every flag can also be set by its TINGXIE_* environment variable."
)


def register(subparsers: Any) -> None:
    """Add the `serve` subcommand to the `tingxie` command line."""
    p = subparsers.add_parser("serve", help="run the streaming recognition server", description=DESCRIPTION)
    add_arguments(p)
    p.set_defaults(func=cmd_serve)


def build_recognizer(settings: Settings):
    torch.set_num_threads(settings.threads or default_threads())
    decoding = DecodingConfig(settings.decoding, settings.beam or None, rescoring=settings.rescoring, lm=settings.lm)
    try:
        rec = Recognizer.from_dir(settings.model, settings.device, decoding, chunk_ms=settings.chunk_ms,
                                  history_ms=settings.history_ms, blank_threshold=settings.blank_threshold,
                                  precision=command_precision("auto" if settings.precision == "int8" else settings.precision,
                                                              settings.device),
                                  final_precision=settings.precision)
    except ModelDirError:
        raise
    except ValueError as e:  # precision or rescoring the device or model cannot do
        raise ConfigError(str(e)) from None
    rec.defer_search = True  # sessions read results on the event loop: the search runs there
    return rec


def vad_factory(settings: Settings) -> Callable[[int], Any] | None:
    if settings.vad == "ctc":
        return None
    if settings.vad == "energy":
        return EnergyVad

    if not silero_available():
        raise ConfigError("--vad silero needs the optional package: pip install silero-vad")
    return SileroVad


def build_app(settings: Settings):
    return App(settings, build_recognizer(settings), new_vad=vad_factory(settings))


def cmd_serve(args: argparse.Namespace) -> int:
    flags = {opt.name: getattr(args, opt.name, None) for opt in OPTIONS}
    try:
        settings = Settings.from_sources(flags)
        logging.basicConfig(
            level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        if settings.log_level != "debug":
            logging.getLogger("websockets").setLevel(logging.WARNING)  # one line per connection otherwise
        app = build_app(settings)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    log = logging.getLogger("tingxie.server")
    log.info("settings: %s", settings.public())
    rec = app.rec
    final = f", final passes by {rec.final.name} in {rec.final.precision}" if rec.final is not None else ""
    if rec.final is not None and rec.final.rescorer is not None:
        final += f", rescored by Whisper's decoder ({rec.final.rescorer.cfg.nbest}-best)"
    log.info("CPU: %s; model on %s in %s%s with %d threads (tingxie bench measures this machine's capacity)",
             describe_cpu(), rec.device, precision_name(rec), final, torch.get_num_threads())
    if "OMP_WAIT_POLICY" not in os.environ:
        log.warning("OMP_WAIT_POLICY is not set: export OMP_WAIT_POLICY=PASSIVE (see docs/deployment.md)")
    asyncio.run(app.run())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server", description=DESCRIPTION)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return cmd_serve(args)
    except ModelDirError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
