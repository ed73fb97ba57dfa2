"""Offline batch transcription: many files in, transcripts out (docs/batch.md).

    inputs.expand_inputs   files, folders, globs, JSONL manifests, wav.scp -> InputItems
    media.load_media       any audio/video file -> 16 kHz float32 (mixed or per channel)
    vad.segment            long audio -> utterances of at most max_segment_s
    engine.BatchEngine     utterances -> Results, in padded length-sorted batches
    pipeline.run_local     the three above over a list of inputs -> Outcomes in order
    ray_runner.run_ray     the same on Ray Data (optional extra `cluster`)
    formats, writer        txt/json/jsonl/srt/vtt/tsv; output files and resume
"""

from .engine import BatchEngine, EngineOptions
from .inputs import InputError, InputItem, expand_inputs
from .media import Media, load_media
from .pipeline import BatchOptions, Outcome, Summary, run_local
from .results import Segment, Transcript
from .vad import VadOptions

__all__ = [
    "BatchEngine",
    "BatchOptions",
    "EngineOptions",
    "InputError",
    "InputItem",
    "Media",
    "Outcome",
    "Segment",
    "Summary",
    "Transcript",
    "VadOptions",
    "expand_inputs",
    "load_media",
    "run_local",
]
