"""Streaming step cost per chunk in server-like batches, with and without a thread that
holds the GIL part of the time (as the server's event loop does).

Streams carry short utterances (push-to-talk: fresh streams keep joining, last chunks
are partial) or long ones (`--long`); each step takes B ready streams, as the engine
does at capacity. A second thread, in the same process, runs pure Python for
`--loop-busy` of the time in short bursts, then sleeps: every operator call of the step
must wait for the GIL while that thread holds it.

    python bench/step_contention.py --model models/default --batch 1 8 32 --loop-busy 0 0.35
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from asr.checkpoint import load_model_dir  # noqa: E402
from asr.config import DecodingConfig  # noqa: E402
from asr.recognizer import Recognizer, command_precision  # noqa: E402


def python_load(busy: float, stop: threading.Event, burst_s: float = 0.002) -> None:
    while not stop.is_set():
        t = time.perf_counter()
        while time.perf_counter() - t < busy * burst_s:
            pass  # holds the GIL
        time.sleep((1 - busy) * burst_s)


def step_cost(rec: Recognizer, audio: np.ndarray, batch: int, long: bool, chunks: int) -> float:
    """Seconds of `Recognizer.step` per stream-chunk."""
    rng = random.Random(0)

    def new_stream():
        s = rec.stream(16000)
        n = audio.size if long else int(16000 * rng.uniform(1.5, 4.0))
        s.accept_waveform(audio[:n])
        s.input_finished()
        return s

    pool = [new_stream() for _ in range(batch * 4)]
    spent, done = 0.0, 0
    while done < chunks:
        ready = [s for s in pool if s.ready()][:batch]
        t = time.perf_counter()
        rec.step(ready)
        spent += time.perf_counter() - t
        done += len(ready)
        for i, s in enumerate(pool):
            s.partial()  # the search, as the server's loop runs it (not timed)
            if not s.ready():
                s.end_utterance()
                pool[i] = new_stream()
    return spent / done


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=ROOT / "models" / "default")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--loop-busy", type=float, nargs="+", default=[0.0, 0.35])
    p.add_argument("--long", action="store_true", help="long streams instead of short utterances")
    p.add_argument("--chunks", type=int, default=600)
    p.add_argument("--precision", default="auto", help="auto: bf16 on a CPU with native bf16, as the server")
    args = p.parse_args()
    torch.set_num_threads(1)
    bundle = load_model_dir(args.model)
    rec = Recognizer(bundle, "cpu", DecodingConfig(lm="none"), bundle.streaming_chunk(640, 2560),
                     precision=command_precision(args.precision, "cpu"))
    rec.defer_search = True
    t = np.arange(16000 * 30) / 16000
    audio = (0.1 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 0.5 * t) > 0)).astype(np.float32)
    audio += np.random.default_rng(0).normal(0, 0.01, audio.size).astype(np.float32)
    print(f"model {args.model.name}, precision {rec.compute_dtype}, one thread, "
          f"{'long streams' if args.long else 'short utterances'}")
    print("| streams per step | loop thread busy | step ms per chunk |\n|---|---|---|")
    step_cost(rec, audio, max(args.batch), args.long, 200)  # warm-up: the first steps trace the blocks
    for b in args.batch:
        for busy in args.loop_busy:
            stop = threading.Event()
            load = threading.Thread(target=python_load, args=(busy, stop), daemon=True)
            if busy > 0:
                load.start()
            cost = step_cost(rec, audio, b, args.long, args.chunks)
            stop.set()
            print(f"| {b} | {busy:.0%} | {cost * 1000:.2f} |", flush=True)


if __name__ == "__main__":
    main()
