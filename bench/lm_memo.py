"""The language model's memo limit: search time, memo sizes and RSS, limit against limit.

    python bench/lm_memo.py --limits 200000 50000 [--clips 300] [--model models/default]

For each limit a fresh process decodes the same real recordings
(../shared/data/real_zh/eval, in name order, repeated past the end) as the server does:
the streaming pass, then the full-context final pass. Every 30 clips it prints the time
spent so far, the entries of each memo (scores, back-off weights, bounds, states) and the
process's RSS. The memos fill with entries an utterance mostly uses alone, so a limit
sets how much memory they hold more than how fast the search is.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from asr.audio import read_audio  # noqa: E402
from asr.lm import NgramLM  # noqa: E402
from asr.recognizer import Recognizer  # noqa: E402

AUDIO_DIR = ROOT.parent / "shared" / "data" / "real_zh" / "eval" / "audio"


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_one(limit: int, clips: int, model: Path, every: int) -> None:
    NgramLM.MEMO_LIMIT = limit
    rec = Recognizer.from_dir(model, device="cpu")
    if rec.lm is None:
        sys.exit(f"{model} has no language model")
    files = sorted(AUDIO_DIR.glob("*.wav"))
    if not files:
        sys.exit(f"no WAV files in {AUDIO_DIR}")
    lm, spent = rec.lm, 0.0
    for k in range(clips):
        audio, rate = read_audio(files[k % len(files)])
        t = time.perf_counter()
        stream = rec.stream()
        stream.accept(audio[0])
        stream.end_utterance()
        rec.transcribe(audio[0], rate)
        spent += time.perf_counter() - t
        if (k + 1) % every == 0 or k + 1 == clips:
            sizes = [len(m) for m in (lm._cache, lm._bows, lm._bounds, lm._states)]
            print(f"limit {limit}: {k + 1} clips, {spent:.1f} s, memo entries {sizes}, RSS {rss_mb():.0f} MB", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limits", type=int, nargs="+", default=[200_000, 50_000])
    ap.add_argument("--clips", type=int, default=300)
    ap.add_argument("--every", type=int, default=30)
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "default")
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # the child process's limit
    args = ap.parse_args()
    if args.one is not None:
        run_one(args.one, args.clips, args.model, args.every)
        return
    for limit in args.limits:  # a fresh process each: the allocator's state is part of the figure
        subprocess.run([sys.executable, __file__, "--one", str(limit), "--clips", str(args.clips),
                        "--every", str(args.every), "--model", str(args.model)], check=True)


if __name__ == "__main__":
    main()
