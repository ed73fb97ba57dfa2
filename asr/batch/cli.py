"""`tingxie transcribe`: the arguments and the run loop (progress, outputs, resume,
summary). The model flags (--model, --device, --decoding, --beam) come from the tingxie command line (tingxie/cli.py)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from tqdm import tqdm

from ..checkpoint import ModelDirError
from ..config import ConfigError
from ..decoding.context import ContextGraph, HotwordError, parse_hotwords
from ..recognizer import PRECISIONS, default_threads
from ..text.format import Formatter
from ..text.options import TextOptions
from ..text.punct import default_punct_dir
from .engine import EngineOptions
from .formats import FORMATS
from .inputs import InputError, InputItem, expand_inputs
from .media import CHANNEL_MODES
from .pipeline import BatchOptions, Outcome, Summary, run_local
from .ray_runner import RayOptions, run_ray
from .vad import VAD_METHODS, VadOptions
from .writer import Writer

__all__ = ["add_arguments", "run"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", metavar="INPUT",
                   help="audio/video files, directories (recursive), globs ('data/**/*.mp3'), "
                        "JSONL manifests (.jsonl) or Kaldi wav.scp lists (.scp)")
    p.add_argument("--json", action="store_true", help="same as --format jsonl")
    out = p.add_argument_group("output")
    out.add_argument("--format", "-f", choices=FORMATS, default=None,
                     help="txt (default), json, jsonl (one file for all inputs), srt, vtt, tsv")
    out.add_argument("--output-dir", "-o", type=Path, default=None,
                     help="write one file per input here (jsonl: transcripts.jsonl); default: standard output")
    out.add_argument("--resume", action="store_true", help="skip inputs whose output already exists in --output-dir")
    out.add_argument("--cue-chars", type=int, default=32, help="longest subtitle line (srt, vtt) in characters")
    out.add_argument("--summary", type=Path, default=None, help="also write the run summary as JSON to this file")
    out.add_argument("--no-progress", action="store_true", help="no progress bar")
    txt = p.add_argument_group("readable text")
    txt.add_argument("--punctuation", choices=("on", "off"), default="on",
                     help="punctuate segment texts with the punctuation model (default on)")
    txt.add_argument("--itn", choices=("on", "off"), default="on",
                     help="write spoken numbers as figures: 13800138000, 3500元, 50%% (default on)")
    txt.add_argument("--punct-model", type=Path, default=None,
                     help="punctuation model folder (default: models/punct of the repository)")
    txt.add_argument("--hotwords", type=Path, default=None,
                     help="file of phrases to favour, one a line ('phrase' or 'phrase boost')")
    txt.add_argument("--hotword-boost", type=float, default=2.0, help="score per matched unit of a hotword")
    aud = p.add_argument_group("audio and segmentation")
    aud.add_argument("--channels", choices=CHANNEL_MODES, default="mix",
                     help="mix: one transcript of the down-mix; split: each channel recognised on its own")
    aud.add_argument("--vad", choices=VAD_METHODS, default="auto",
                     help="how long audio is cut into utterances: auto (silero-vad if installed, else energy), "
                          "silero, energy, off (fixed windows)")
    aud.add_argument("--vad-all", action="store_true",
                     help="segment every file (default: files up to --max-segment-s are recognised whole)")
    aud.add_argument("--vad-threshold", type=float, default=0.5, help="speech probability that starts speech")
    aud.add_argument("--min-silence-ms", type=int, default=500, help="pause that ends an utterance")
    aud.add_argument("--speech-pad-ms", type=int, default=500,
                     help="audio kept before and after each utterance (never past the middle of a pause)")
    aud.add_argument("--max-segment-s", type=float, default=20.0, help="longest utterance; longer speech is cut")
    run = p.add_argument_group("batching and resources")
    run.add_argument("--batch-frames", type=int, default=0,
                     help="padded fbank frames (10 ms) per model call (0: 4000 on a CPU, 80000 on a GPU)")
    run.add_argument("--max-batch", type=int, default=0, help="utterances per model call (0: 64 on a CPU, 256 on a GPU)")
    run.add_argument("--precision", choices=(*PRECISIONS, "int8"), default="auto",
                     help="auto: bf16 on CPUs with native bf16 (AVX512-BF16/AMX), else fp32 on a CPU; bf16/fp16 on CUDA")
    run.add_argument("--workers", type=int, default=-1,
                     help="threads decoding and segmenting files ahead of the model (-1: none on a CPU, 2 with a GPU)")
    run.add_argument("--threads", type=int, default=0, help="torch threads (0: one per CPU core but one)")
    ray = p.add_argument_group("cluster (pip install 'tingxie[cluster]')")
    ray.add_argument("--ray", metavar="ADDRESS", default=None,
                     help="run on Ray Data: 'auto' (the cluster this machine belongs to), 'local' (start one here), "
                          "or an address such as ray://head:10001")
    ray.add_argument("--ray-actors", type=int, default=1, help="recognition actors, each holding one model")
    ray.add_argument("--ray-gpus", type=float, default=None,
                     help="GPUs per actor (default: 1 when the cluster has GPUs, else 0)")
    ray.add_argument("--ray-cpus", type=float, default=1.0, help="CPUs per recognition actor")


def _options(args: argparse.Namespace) -> BatchOptions:
    vad = VadOptions(
        method=args.vad, only_long=not args.vad_all, threshold=args.vad_threshold,
        min_silence_ms=args.min_silence_ms, speech_pad_ms=args.speech_pad_ms, max_segment_s=args.max_segment_s,
    )
    engine = EngineOptions(args.batch_frames, args.max_batch)
    text = TextOptions(args.punctuation == "on", args.itn == "on")
    return BatchOptions(args.channels, vad, engine, workers=args.workers, text=text)


def _readable(args: argparse.Namespace, rec: Any, options: BatchOptions) -> tuple[Any, Any]:
    """(formatter or None, hotword context graph or None) for the run."""
    formatter = None
    if options.text.punctuation or options.text.itn:
        path = args.punct_model or default_punct_dir()
        formatter = Formatter.load(path) if options.text.punctuation else Formatter(None)
    graph = None
    if args.hotwords is not None:
        try:
            text = args.hotwords.read_text(encoding="utf-8")
            graph = ContextGraph(parse_hotwords(text, rec.tokenizer, default_boost=args.hotword_boost))
        except (OSError, HotwordError) as e:
            raise ConfigError(f"--hotwords {args.hotwords}: {e}") from None
    return formatter, graph


def _progress(total: int, disable: bool):
    off = disable or not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty())  # a bar only on a terminal
    return tqdm(total=total, unit="file", dynamic_ncols=True, disable=off, file=sys.stderr)


def _say(bar: Any, text: str) -> None:
    if bar is not None and not bar.disable:
        bar.write(text, file=sys.stderr)
    else:
        print(text, file=sys.stderr)


def run(args: argparse.Namespace, make_recognizer: Callable[[argparse.Namespace], Any]) -> int:
    """The `transcribe` command; 0 when every input was transcribed, 1 when some failed,
    2 for a usage error."""
    fmt = args.format or ("jsonl" if args.json else "txt")
    try:
        options = _options(args)
        if args.cue_chars < 1:
            raise ConfigError("--cue-chars must be positive")
        if args.resume and args.output_dir is None:
            raise ConfigError("--resume needs --output-dir (it skips inputs whose output file exists)")

        torch.set_num_threads(args.threads or default_threads())
        try:
            rec = make_recognizer(args) if args.ray is None else make_recognizer(_on_cpu(args))
        except ModelDirError:
            raise  # the command line reports it (exit 2)
        except ValueError as e:  # a precision or rescoring the device or model cannot do
            raise ConfigError(str(e)) from e
        try:
            formatter, hotwords = _readable(args, rec, options)
        except FileNotFoundError as e:
            raise ConfigError(str(e)) from None
        items = expand_inputs(args.files)
        if args.output_dir is None and fmt in ("srt", "vtt", "tsv") and len(items) > 1:
            raise ConfigError(f"--format {fmt} writes one file per input: give --output-dir for {len(items)} inputs")
    except (ConfigError, InputError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    writer = Writer(fmt, args.output_dir, cue_chars=args.cue_chars)
    summary = Summary()
    todo = [it for it in items if not (args.resume and writer.done(it))]
    summary.skipped = len(items) - len(todo)
    bar = _progress(len(todo), args.no_progress)
    try:
        for outcome in _outcomes(args, todo, rec, options, formatter, hotwords):
            summary.add(outcome)
            if outcome.error:
                _say(bar, f"error: {outcome.error}")
            else:
                assert outcome.transcript is not None
                writer.write(outcome.transcript, outcome.item)
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(f"{summary.audio_s / 3600:.2f} h audio, {summary.speed:.0f}x RT", refresh=False)
    except ConfigError as e:  # raised by the Ray mode before any work (no ray, bad address)
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        writer.close()
        if bar is not None:
            bar.close()
    if len(items) > 1 or summary.failed or args.output_dir is not None:
        print(summary.line(), file=sys.stderr)
    if args.summary is not None:
        args.summary.write_text(json.dumps(summary.to_dict(), ensure_ascii=False, indent=1) + "\n")
    return 1 if summary.failed else 0


def _on_cpu(args: argparse.Namespace) -> argparse.Namespace:
    """The driver's copy of the model in Ray mode (names and checks only) stays on the CPU."""
    ns = argparse.Namespace(**vars(args))
    ns.device = "cpu"
    if ns.precision == "fp16":  # the actors' precision; the driver's copy runs nothing
        ns.precision = "auto"
    return ns


def _outcomes(args: argparse.Namespace, items: list[InputItem], rec: Any, options: BatchOptions, formatter: Any = None,
              hotwords: Any = None) -> Iterator[Outcome]:
    if args.ray is None:
        yield from run_local(items, rec, options, formatter, hotwords)
        return
    ray_opts = RayOptions(args.ray, args.ray_actors, args.ray_gpus, args.ray_cpus, args.device, args.precision)
    for outcome in run_ray(items, rec, options, ray_opts, hotwords):
        if formatter is not None and outcome.transcript is not None:  # display text on the driver
            t = outcome.transcript
            segs = tuple(seg.formatted(formatter, options.text) for seg in t.segments)
            outcome = dataclasses.replace(outcome, transcript=dataclasses.replace(t, segments=segs))
        yield outcome
