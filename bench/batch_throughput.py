"""Offline throughput: audio seconds per wall second, batched (`asr.batch`) versus file
by file (`Recognizer.transcribe` on each file, what `tingxie transcribe` did before).

    python bench/batch_throughput.py --model models/default [INPUT ...] [--threads N]
        [--precision fp32|bf16] [--limit N] [--repeat N]

INPUTs are anything `tingxie transcribe` takes (files, folders, globs, manifests);
default: the shared real_zh eval set (150 utterances, 14.6 min) and its two long-form
files (2 x 2.5 min). Both modes decode the same files with the same model and threads,
including reading the files; the model is loaded once, outside the timings. Each mode
gets a short warm-up first. Prints one line per run and a JSON summary.

OpenMP threads that spin while waiting fight with other processes on a shared machine;
this script sets OMP_WAIT_POLICY=PASSIVE before torch loads (export it to override).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from asr.audio import read_audio  # noqa: E402
from asr.batch.inputs import expand_inputs  # noqa: E402
from asr.batch.pipeline import BatchOptions, run_local  # noqa: E402
from asr.config import DecodingConfig  # noqa: E402
from asr.recognizer import Recognizer  # noqa: E402

EVAL = REPO.parent / "shared" / "data" / "real_zh" / "eval"


def file_by_file(rec: Recognizer, paths: list[str]) -> float:
    audio_s = 0.0
    for p in paths:
        audio, rate = read_audio(p)
        mono = audio.mean(axis=0)
        rec.transcribe(mono, rate)
        audio_s += mono.size / rate
    return audio_s


def batched(rec: Recognizer, paths: list[str], options: BatchOptions) -> float:
    return sum(o.audio_s for o in run_local(expand_inputs(paths), rec, options))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="*")
    p.add_argument("--model", type=Path, default=REPO / "models" / "default")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: one per CPU core)")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--limit", type=int, default=0, help="use the first N inputs")
    p.add_argument("--repeat", type=int, default=1, help="runs per mode (the median is reported)")
    p.add_argument("--modes", nargs="+", choices=["file", "batch"], default=["file", "batch"])
    p.add_argument("--lm", default="auto", help="language model as `tingxie transcribe --lm`: auto, none or a file")
    args = p.parse_args()

    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    inputs = args.inputs or [str(EVAL / "manifest.jsonl"), str(EVAL / "manifest_longform.jsonl")]
    items = [i for i in expand_inputs(inputs) if i.error is None]
    paths = [i.path for i in items][: args.limit or None]
    rec = Recognizer.from_dir(args.model, device="cpu", precision=args.precision, decoding=DecodingConfig(lm=args.lm))
    cfg = rec.model.cfg
    print(f"model {rec.name}: {rec.model.num_parameters() / 1e6:.1f} M params (d {cfg.output_size}, {cfg.num_blocks} blocks, "
          f"ff {cfg.linear_units}, vocab {cfg.vocab_size}); {len(paths)} files; threads {torch.get_num_threads()}; "
          f"precision {args.precision}; decoding {rec.search_method}, LM {'on' if rec.lm else 'off'}; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
    options = BatchOptions()
    runs: dict[str, list[float]] = {m: [] for m in args.modes}
    audio_total = 0.0
    for mode in args.modes:
        fn = (lambda ps: file_by_file(rec, ps)) if mode == "file" else (lambda ps: batched(rec, ps, options))
        fn(paths[:3])  # warm-up
        for r in range(args.repeat):
            t = time.perf_counter()
            audio_total = fn(paths)
            wall = time.perf_counter() - t
            runs[mode].append(audio_total / wall)
            print(f"{mode:5s} run {r + 1}: {audio_total:.0f} s of audio in {wall:.1f} s = {audio_total / wall:.1f}x real time",
                  flush=True)
    summary = {
        "model": rec.name, "params_m": round(rec.model.num_parameters() / 1e6, 2), "files": len(paths),
        "audio_s": round(audio_total, 1), "threads": torch.get_num_threads(), "precision": args.precision,
        "lm": rec.lm is not None,
        **{f"{m}_x_realtime": round(statistics.median(v), 1) for m, v in runs.items()},
    }
    if "file" in runs and "batch" in runs:
        summary["speedup"] = round(statistics.median(runs["batch"]) / statistics.median(runs["file"]), 2)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
