"""`tingxie bench`: this machine's streaming capacity for a model, in under a minute.

It runs the server's own work in-process, with the server's defaults (chunk, attention
history, search and LM, threads) and no sockets, and times its three parts:

- the engine's batched streaming step (`Recognizer.step`, the model thread) for
  growing numbers of streams, each holding its full attention history;
- the per-stream work on the event loop's thread: features for each chunk and the CTC
  search (with the LM) over its log-probs;
- the full-context final pass, per second of audio (model thread).

A stream brings one chunk per chunk period (640 ms for the default model). The
recommended `--max-sessions` is the largest number of streams for which the model
thread's steps and the loop thread's work each take at most LOAD (70%) of that period;
the rest absorbs the protocol work, bursts and the final passes that `--final-pass auto`
runs while there is room. With `--final-pass full` every utterance also costs its full
pass, which the second figure includes (utterances of UTTERANCE_S seconds).

Precision: on a CPU with native bf16 (AVX512-BF16 or AMX) both fp32 and bf16 steps are
timed and the faster is chosen; elsewhere bf16 is emulated and fp32 is used.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from asr.checkpoint import default_model_dir
from asr.config import DecodingConfig
from asr.recognizer import Recognizer, cpu_has_native_bf16, default_threads, describe_cpu, resolve_device
from server.settings import Settings

__all__ = ["register", "run", "Capacity"]

LOAD = 0.7  # share of each thread's time the recommended streams may use
UTTERANCE_S = 4.0  # utterance length assumed for the cost of full final passes
SAMPLE_RATE = 16000


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("bench", help="measure this machine's streaming capacity for a model (under a minute)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=None, help="model directory (default: $TINGXIE_MODEL or models/default)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--threads", type=int, default=0, help="model threads, as serve's --threads (0: one per core but one)")
    p.add_argument("--max-seconds", type=float, default=50.0, help="time budget for the measurements")
    p.add_argument("--rescoring", choices=["true", "false"], default=None,
                   help="size with the finals' attention rescoring on or off, as serve's --rescoring (default: "
                        "as the model ships)")
    p.set_defaults(func=run)


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    """Harmonic bursts with pauses and faint noise: speech-like features and search load
    (the model hears syllables in them), deterministic."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    f0 = 120 + 40 * np.sin(2 * np.pi * 0.7 * t + seed)
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    sig = sum(np.sin(k * phase) / k for k in range(1, 8))
    env = (np.sin(2 * np.pi * 1.3 * t + seed) > -0.2).astype(np.float64)
    return (0.2 * sig * env + 0.003 * rng.standard_normal(t.size)).astype(np.float32)


class Capacity:
    """The measurements and what follows from them (times in seconds)."""

    def __init__(self, chunk_s: float, step_s: dict[int, float], loop_s: float, final_s: float, shared_core: bool):
        self.chunk_s = chunk_s
        self.step_s = dict(sorted(step_s.items()))  # streams -> model step time
        self.loop_s = loop_s  # features + search per stream and chunk
        self.final_s = final_s  # full-context pass per second of audio
        self.shared_core = shared_core  # one core: model and loop share it

    def model_time(self, n: float) -> float:
        """Step time for n streams: linear between the measured sizes, by the last
        measured cost per stream beyond them."""
        sizes = list(self.step_s)
        if n <= sizes[0]:
            return self.step_s[sizes[0]] * n / sizes[0] if n < sizes[0] else self.step_s[sizes[0]]
        for a, b in zip(sizes, sizes[1:]):
            if n <= b:
                return self.step_s[a] + (self.step_s[b] - self.step_s[a]) * (n - a) / (b - a)
        last = sizes[-1]
        return self.step_s[last] * n / last

    def streams(self, full_pass: bool) -> int:
        """Most streams whose per-period work fits LOAD of each thread."""
        budget = LOAD * self.chunk_s
        best, n = 0, 1
        while n < 100_000:
            model = self.model_time(n)
            if full_pass:  # every stream ends an utterance every UTTERANCE_S
                model += n * self.final_s * self.chunk_s
            loop = n * self.loop_s
            fits = (model + loop <= budget) if self.shared_core else (model <= budget and loop <= budget)
            if not fits:
                break
            best, n = n, n + 1
        return best


def _streams(rec: Recognizer, n: int, history_chunks: int) -> list[Any]:
    """n streams that have each decoded `history_chunks` chunks (full attention history)."""
    streams = [rec.stream(SAMPLE_RATE, rescoring=False) for _ in range(n)]
    audio = [speech_like(chunk_seconds(rec) * (history_chunks + 8) + 1, seed=i % 8) for i in range(min(n, 8))]
    for i, s in enumerate(streams):
        s.accept_waveform(audio[i % len(audio)])
    for _ in range(history_chunks):
        rec.step([s for s in streams if s.ready()])
    for s in streams:
        s.partial()  # the search catches up, as the loop does between steps
    return streams


def _time_steps(rec: Recognizer, streams: list[Any], steps: int) -> float:
    """Median wall time of one batched step over all streams (each has audio ready)."""
    times = []
    for _ in range(steps):
        ready = [s for s in streams if s.ready()]
        t0 = time.perf_counter()
        rec.step(ready)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _recognizer(args: argparse.Namespace, settings: Settings, precision: str) -> Recognizer:
    """As the server builds it, either kind of model directory (a two-pass one's final
    model at its automatic precision)."""
    rescoring = None if args.rescoring is None else args.rescoring == "true"
    decoding = DecodingConfig(settings.decoding, settings.beam or None, lm=settings.lm, rescoring=rescoring)
    rec = Recognizer.from_dir(args.model or default_model_dir(), args.device, decoding, chunk_ms=settings.chunk_ms,
                              history_ms=settings.history_ms, blank_threshold=settings.blank_threshold,
                              precision=precision)
    rec.defer_search = True  # as the server: steps run the model; the loop runs the search
    return rec


def chunk_seconds(rec: Recognizer) -> float:
    """Audio per stream in one streaming step."""
    return rec.stride * rec.features.frame_shift_ms / 1000


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    settings = Settings(model=args.model or default_model_dir())
    threads = args.threads or default_threads()
    torch.set_num_threads(threads)
    device = resolve_device(args.device)
    print(f"CPU: {describe_cpu()}")
    if device.type == "cuda":
        print(f"GPU: {torch.cuda.get_device_name(device)}")
    candidates = ["bf16", "fp16"] if device.type == "cuda" else (["fp32", "bf16"] if cpu_has_native_bf16() else ["fp32"])
    recs = {p: _recognizer(args, settings, p) for p in candidates}
    rec = recs[candidates[0]]
    history = rec.chunk.left_chunks if rec.chunk.left_chunks > 0 else 4  # chunks of history each stream holds
    print(f"model: {rec.name}, chunk {chunk_seconds(rec) * 1000:.0f} ms, history {settings.history_ms} ms, "
          f"search {rec.search_method}" + (f" beam {rec.beam_size} with LM" if rec.lm is not None else "")
          + (f"; finals by {rec.final.name}" + (", rescored" if rec.rescores_full_passes else "")
             if rec.final is not None else "")
          + f"; {threads} model thread(s)")

    # Precision: the faster step at a mid-sized batch (traces are made on the first steps).
    probe = {}
    for p, r in recs.items():
        streams = _streams(r, 16, history + 2)
        probe[p] = _time_steps(r, streams, 3)
    precision = min(probe, key=probe.get)  # type: ignore[arg-type]
    rec = recs[precision]
    if len(probe) > 1:
        print("precision: " + ", ".join(f"{p} {t * 1000:.0f} ms" for p, t in probe.items())
              + f" per step of 16 streams -> {precision}")
    else:
        print(f"precision: {precision} (no native bf16 on this device)")
    del recs

    # Engine steps for growing batches (at least one size), until a step takes longer than
    # the chunk period or the time budget is spent.
    step_s: dict[int, float] = {}
    n = 8
    print(f"{'streams':>8} {'ms/step':>9} {'ms/stream':>10}   (one step: {chunk_seconds(rec) * 1000:.0f} ms of audio per stream)")
    while True:
        streams = _streams(rec, n, history)
        step_s[n] = _time_steps(rec, streams, 3)
        print(f"{n:>8} {step_s[n] * 1000:>9.1f} {step_s[n] * 1000 / n:>10.2f}")
        if step_s[n] > chunk_seconds(rec) or n >= 1024 or time.perf_counter() - start > args.max_seconds * 0.7:
            break
        n *= 2

    # The loop thread's work per stream and chunk: features, then the search.
    streams = [rec.stream(SAMPLE_RATE, rescoring=False) for _ in range(8)]
    audio = speech_like(chunk_seconds(rec) * 6, seed=3)
    piece = int(chunk_seconds(rec) * SAMPLE_RATE)
    loop = 0.0
    chunks = 0
    for k in range(5):
        t0 = time.perf_counter()
        for s in streams:
            s.accept_waveform(audio[k * piece : (k + 1) * piece])
        loop += time.perf_counter() - t0
        rec.step([s for s in streams if s.ready()])
        t0 = time.perf_counter()
        for s in streams:
            s.partial()
        loop += time.perf_counter() - t0
        chunks += len(streams)
    loop_s = loop / chunks

    # Full-context final passes, per second of audio.
    utterances = [speech_like(UTTERANCE_S, seed=i) for i in range(4)]
    rec.transcribe_many(utterances[:1], SAMPLE_RATE)
    t0 = time.perf_counter()
    rec.transcribe_many(utterances, SAMPLE_RATE)
    final_s = (time.perf_counter() - t0) / (len(utterances) * UTTERANCE_S)

    cap = Capacity(chunk_seconds(rec), step_s, loop_s, final_s, shared_core=(os.cpu_count() or 1) < 2)
    stream_only, full = cap.streams(False), cap.streams(True)
    print(f"event loop: {loop_s * 1000:.2f} ms per stream and chunk (features and search)")
    print(f"final pass: {final_s * 1000:.1f} ms per second of audio")
    print(f"capacity at {LOAD:.0%} load: {stream_only} streams (--final-pass auto or stream); "
          f"{full} with --final-pass full ({UTTERANCE_S:.0f} s utterances)")
    print(f"precision chosen: {precision}")
    # A two-pass model's finals are its final model's passes: size for them, or past that
    # number finals fall back to the small streaming model's results.
    sessions = full if rec.final is not None else stream_only
    print(f"recommended: tingxie serve --max-sessions {max(1, sessions)} --precision {precision}")
    print(f"({time.perf_counter() - start:.0f} s)")
    return 0
