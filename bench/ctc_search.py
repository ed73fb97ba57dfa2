"""CTC search cost and accuracy on cached model outputs: greedy, prefix beam, prefix beam + LM.

    python bench/ctc_search.py --manifest /work/corpus/synth-v1/dev.jsonl \
        --manifest ../shared/data/real_zh/train/manifest.jsonl [--baseline REV] [--limit N]

The model (`--model`, default models/default) runs once per utterance: full context, and
640 ms chunks with 2.56 s of attention history as the server runs it. The top 40
log-probabilities of every frame are cached (`--cache`); each search runs on the rebuilt
(frames, vocab) matrices (the other entries at -50): whole utterances in one `advance`, and
streams one 16-frame chunk per `advance` with the best path read after each, as the server
does. The LM is the model's own, with its tuned weight and bonus. Searches are interleaved
utterance by utterance (this VM's speed drifts); per mode the LM memo starts empty ("cold":
holding only what earlier utterances left, as after a server start) and a second pass runs
on it filled ("warm"). Prints milliseconds of search per second of audio and CER.

`--baseline REV` adds the prefix beam searches as git revision REV had them (its
`asr/decoding/ctc.py` and `asr/lm.py`, with an LM of their own) and says whether their
n-best lists (units, frames, confidences, scores) equal the current code's.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from asr.audio import read_audio
from asr.config import DecodingConfig
from asr.decoding import GreedyDecoder, PrefixBeamDecoder
from asr.metrics import ErrorCounts
from asr.recognizer import Recognizer
from asr.train.data import read_manifest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TOP = 40  # log-probs kept per frame: enough for any beam up to 40
CHUNK = 16  # encoder frames per streaming chunk (640 ms)
HISTORY_CHUNKS = 4  # 2.56 s of attention history, the server's default


@dataclass
class Utt:
    id: str
    ref: str
    seconds: float
    full: tuple[np.ndarray, np.ndarray]  # (frames, TOP) values, ids
    stream: tuple[np.ndarray, np.ndarray]


def _key(model: Path, manifest: Path, limit: int) -> str:
    h = hashlib.sha1()
    for p in (model / "model.safetensors", manifest):
        h.update(p.read_bytes())
    h.update(f"{limit}/{TOP}/{CHUNK}/{HISTORY_CHUNKS}".encode())
    return h.hexdigest()[:12]


def _top(logp: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    v, i = logp.topk(TOP, dim=-1)
    return v.numpy().astype(np.float32), i.numpy().astype(np.int32)


def load_set(model: Path, manifest: Path, limit: int, cache: Path, precision: str) -> list[Utt]:
    """Top-k log-probs of every utterance of the manifest, computed once and cached."""
    path = cache / f"{manifest.stem}-{_key(model, manifest, limit)}.npz"
    if not path.exists():
        rec = Recognizer.from_dir(model, "cpu", DecodingConfig(lm="none"), precision=precision)
        arrays: dict[str, np.ndarray] = {}
        meta = []
        for n, u in enumerate(read_manifest(manifest, normalize=True)[: limit or None]):
            audio, rate = read_audio(u.audio)
            mono = audio.mean(axis=0)
            for mode, chunk in (("full", None), ("stream", CHUNK)):
                v, i = _top(rec.ctc_logprobs(mono, rate, chunk, HISTORY_CHUNKS))
                arrays[f"{n}_{mode}_v"], arrays[f"{n}_{mode}_i"] = v, i
            meta.append((u.id, u.text, mono.size / rate))
        cache.mkdir(parents=True, exist_ok=True)
        np.savez(path, meta=np.array(meta, dtype=object), **arrays)
    z = np.load(path, allow_pickle=True)
    return [Utt(uid, ref, float(sec), (z[f"{n}_full_v"], z[f"{n}_full_i"]), (z[f"{n}_stream_v"], z[f"{n}_stream_i"]))
            for n, (uid, ref, sec) in enumerate(z["meta"])]


def dense(top: tuple[np.ndarray, np.ndarray], vocab: int) -> torch.Tensor:
    """(frames, vocab) log-probs: the cached top entries, the rest far below them."""
    v, i = top
    out = torch.full((v.shape[0], vocab), -50.0)
    out.scatter_(1, torch.from_numpy(i.astype(np.int64)), torch.from_numpy(v))
    return out


def baseline_modules(rev: str) -> tuple:
    """`asr/decoding/ctc.py` and `asr/lm.py` as git revision `rev` had them (both import nothing of asr)."""
    mods = []
    for path in ("asr/decoding/ctc.py", "asr/lm.py"):
        src = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{path}"], capture_output=True, text=True,
                             check=True).stdout
        name = f"_baseline_{Path(path).stem}"
        spec = importlib.util.spec_from_loader(name, loader=None)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod  # dataclasses look their module up
        exec(compile(src, f"{rev}:{path}", "exec"), mod.__dict__)
        mods.append(mod)
    return tuple(mods)


@dataclass
class Search:
    name: str
    make: object  # () -> decoder
    lm: object = None  # whose cache a cold pass clears
    seconds: dict = None
    hyps: dict = None

    def __post_init__(self) -> None:
        self.seconds, self.hyps = {}, {}


def decode(search: Search, lp: torch.Tensor, streaming: bool) -> tuple[float, list]:
    """Seconds and n-best; streaming: one 16-frame chunk per advance, the best path read after each."""
    d = search.make()
    t0 = time.perf_counter()
    if streaming:
        for s in range(0, lp.size(0), CHUNK):
            d.advance(lp[s : s + CHUNK])
            d.best()
    else:
        d.advance(lp)
    nbest = d.nbest()
    return time.perf_counter() - t0, [(h.tokens, h.frames, h.confidences, h.score) for h in nbest]


def run(searches: list[Search], utts: list[Utt], vocab: int, passes: int) -> None:
    """Every search on every utterance, interleaved (the VM's speed drifts). Per mode, the LM
    caches start empty (pass 1, "cold": only what earlier utterances left) and then stay ("warm")."""
    for mode in ("full", "stream"):
        for s in searches:
            if s.lm is not None:
                getattr(s.lm, "clear_cache", s.lm._cache.clear)()
        for p in range(passes):
            for u in utts:
                lp = dense(getattr(u, mode), vocab)
                for s in searches:
                    sec, nbest = decode(s, lp, mode == "stream")
                    key = (mode, "cold" if p == 0 else "warm")
                    s.seconds[key] = s.seconds.get(key, 0.0) + sec
                    s.hyps[(mode, u.id)] = nbest


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=ROOT / "models/default")
    p.add_argument("--manifest", type=Path, action="append", required=True)
    p.add_argument("--limit", type=int, default=0, help="first N utterances of each manifest (0: all)")
    p.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "tingxie-ctc-search")
    p.add_argument("--precision", default="auto", help="of the model run that fills the cache")
    p.add_argument("--beam", type=int, default=10)
    p.add_argument("--baseline", default=None, help="git revision whose LM search to time alongside")
    p.add_argument("--passes", type=int, default=2, help="1: cold LM caches only; 2: and a warm pass")
    args = p.parse_args()


    rec = Recognizer.from_dir(args.model, "cpu", DecodingConfig(lm="auto"))
    vocab, lm, w, bonus = rec.model.cfg.vocab_size, rec.lm, rec.lm_weight, rec.lm_bonus
    beam = args.beam
    searches = [Search("greedy", lambda: GreedyDecoder()),
                Search(f"prefix beam {beam}", lambda: PrefixBeamDecoder(beam))]
    if args.baseline:
        old_ctc, old_lm = baseline_modules(args.baseline)
        lm_file = rec.bundle.lm["file"]
        olm = old_lm.NgramLM.load(lm_file, rec.tokenizer.units)
        searches.insert(1, Search(f"prefix beam {beam} ({args.baseline})", lambda: old_ctc.PrefixBeamDecoder(beam)))
        searches.append(Search(f"prefix beam {beam} + LM ({args.baseline})",
                               lambda: old_ctc.PrefixBeamDecoder(beam, lm=olm, lm_weight=w, lm_bonus=bonus), olm))
    searches.append(Search(f"prefix beam {beam} + LM", lambda: PrefixBeamDecoder(beam, lm=lm, lm_weight=w, lm_bonus=bonus),
                           lm))
    modes = [("full", "full context"), ("stream", "streaming 640 ms")]
    for manifest in args.manifest:
        utts = load_set(args.model, manifest, args.limit, args.cache, args.precision)
        audio_s = sum(u.seconds for u in utts)
        for s in searches:
            s.seconds, s.hyps = {}, {}
        run(searches, utts, vocab, args.passes)
        print(f"\n{manifest} ({len(utts)} utterances, {audio_s:.0f} s); ms of search per s of audio, LM cache "
              f"cold{' / warm' if args.passes > 1 else ''}; CER")
        print("| search | " + " | ".join(f"{m} ms/s | {m} CER" for _, m in modes) + " |")
        print("|---|" + "---|---|" * len(modes))
        for s in searches:
            cells = []
            for mode, _ in modes:
                times = [s.seconds[(mode, c)] / audio_s * 1000 for c in ("cold", "warm") if (mode, c) in s.seconds]
                counts = ErrorCounts()
                for u in utts:
                    counts.add(u.ref, rec.tokenizer.decode(s.hyps[(mode, u.id)][0][0]))
                cells += [" / ".join(f"{t:.3f}" for t in times), f"{100 * counts.cer:.2f}%"]
            print(f"| {s.name} | " + " | ".join(cells) + " |")
        pairs = [(a, b) for a in searches for b in searches if a.name.startswith(b.name + " (")]
        for old, new in pairs:
            same = sum(old.hyps[k] == new.hyps[k] for k in new.hyps)
            print(f"{new.name}: n-best (units, frames, confidences, scores) identical to {args.baseline}'s "
                  f"for {same} of {len(new.hyps)} decodes")


if __name__ == "__main__":
    main()
