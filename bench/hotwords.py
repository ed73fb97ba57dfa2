"""Hotword recall and false boosts on real speech.

    python bench/hotwords.py [--model DIR] [--manifest ../shared/data/real_zh/eval/manifest.jsonl]
                             [--boost 2.0 3.0] [--limit N]

Two test sets: real eval utterances (`--manifest`), and with `--synthetic N` also N
held-out sentences (clauses of the test split of the People's Daily text, which no model
was trained on, each holding a rare word) synthesised with espeak-ng (cmn-latn-pinyin,
the variant reserved for test sets). Each utterance's rare words are the words of its
reference (jieba) of 2-4 Han
characters that jieba's dictionary ranks rarest (frequency below `--max-freq`, at most
two per utterance). The model runs once per utterance (full context, as a final: for a
two-pass model its final model, whose search is then rescored as served); the search
then runs:

- without hotwords;
- with the utterance's own rare words as its list;
- with the rare words of the whole set as one list (a domain list);
- with an unrelated 100-phrase list (rare words of held-out People's Daily text that occur
  in no reference), on every utterance: the CER change is the cost of false boosts.

Prints recall of the rare words (a word counts when it appears in the hypothesis), CER
over all utterances, and the search time per utterance, for each case.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from asr.audio import read_audio  # noqa: E402
from asr.decoding.context import ContextGraph, parse_hotwords  # noqa: E402
from asr.metrics import cer  # noqa: E402


def rare_words(text: str, max_freq: int, per_utt: int = 2) -> list[str]:
    import jieba  # noqa: PLC0415

    words = {w for w in jieba.lcut(text, HMM=False) if 2 <= len(w) <= 4 and all("\u4e00" <= c <= "\u9fff" for c in w)}
    ranked = sorted(words, key=lambda w: (jieba.dt.FREQ.get(w, 0), w))
    return [w for w in ranked if jieba.dt.FREQ.get(w, 0) < max_freq][:per_utt]


def unrelated_phrases(refs: list[str], n: int, max_freq: int, tokenizer) -> list[str]:
    from asr.data.text_sources import iter_news, split_of  # noqa: PLC0415

    joined = "".join(refs)
    out: list[str] = []
    for para in iter_news():
        if split_of(para.strip()) != "test":
            continue
        for w in rare_words(para, max_freq, per_utt=3):
            if w not in joined and w not in out and tokenizer.unk not in tokenizer.encode(w):
                out.append(w)
        if len(out) >= n:
            break
    return out[:n]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=ROOT / "models" / "default")
    p.add_argument("--manifest", type=Path, default=ROOT.parent / "shared" / "data" / "real_zh" / "eval" / "manifest.jsonl")
    p.add_argument("--boost", type=float, nargs="+", default=[2.0], help="boosts to compare (log-score per unit)")
    p.add_argument("--max-freq", type=int, default=3000)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--precision", default="auto")
    p.add_argument("--write-unrelated", type=Path, default=None, help="write the unrelated 100-phrase list here")
    p.add_argument("--synthetic", type=int, default=0, help="also N synthetic held-out sentences")
    args = p.parse_args()

    import torch  # noqa: PLC0415

    from asr.recognizer import Recognizer, command_precision  # noqa: PLC0415

    torch.set_num_threads(1)
    rec = Recognizer.from_dir(args.model, "cpu", precision=command_precision(args.precision, "cpu"))
    rows = [json.loads(line) for line in args.manifest.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = rows[: args.limit] if args.limit else rows
    audios = []
    for r in rows:
        audio, rate = read_audio(args.manifest.parent / r["audio"])
        audios.append((audio[0], rate))
    refs = [r.get("text_norm") or r["text"] for r in rows]
    run(rec, "real eval utterances", refs, audios, args)
    if args.synthetic:
        refs, audios = synthetic(args.synthetic, args.max_freq, rec.tokenizer)
        run(rec, "synthetic held-out sentences (espeak-ng)", refs, audios, args)
    return 0


def synthetic(n: int, max_freq: int, tokenizer) -> tuple[list[str], list[tuple[np.ndarray, int]]]:
    import re  # noqa: PLC0415

    from asr.data.normalize import normalize_text  # noqa: PLC0415
    from asr.data.text_sources import iter_news, split_of  # noqa: PLC0415
    from asr.data.voices import ESPEAK_RESERVED_VARIANT, ESPEAK_SR, espeak_segment  # noqa: PLC0415

    refs: list[str] = []
    for para in iter_news():
        if split_of(para.strip()) != "test":
            continue
        for clause in re.split(r"[，。！？；：、]", para):
            text = normalize_text(clause)
            if 8 <= len(text) <= 24 and all("\u4e00" <= c <= "\u9fff" for c in text):
                ws = rare_words(text, max_freq, 1)
                if ws and tokenizer.unk not in tokenizer.encode(text):
                    refs.append(text)
                    break
        if len(refs) >= n:
            break
    audios = [(np.concatenate(espeak_segment(t, ESPEAK_RESERVED_VARIANT, 160, 50)), ESPEAK_SR) for t in refs]
    return refs, audios


def run(rec, title: str, refs: list[str], audios, args) -> None:
    words = []
    for ref in refs:
        ok = [w for w in rare_words(ref, args.max_freq) if rec.tokenizer.unk not in rec.tokenizer.encode(w)]
        words.append(ok)
    domain = sorted({w for ws in words for w in ws})
    unrelated = unrelated_phrases(refs, 100, args.max_freq, rec.tokenizer)
    final = rec.final
    print(f"\n{title}: model {rec.name}; {len(refs)} utterances, {sum(map(len, words))} rare words "
          f"({sum(1 for w in words if w)} utterances hold one), domain list {len(domain)}, "
          f"unrelated list {len(unrelated)}; search {rec.search_method} beam {(final or rec).beam_size}"
          + (f", rescored by Whisper's decoder ({final.rescorer.cfg.nbest}-best)" if final and final.rescorer else ""))
    if final is not None:  # two-pass: the final model's encoder output and CTC log-probs
        from asr.whisper.features import log_mel  # noqa: PLC0415

        passes = [final.encode([log_mel(final._to_16k(audio, rate))])[0] for audio, rate in audios]
        ends = [audio.size / rate for audio, rate in audios]

        def decode(i: int, g):
            enc, lp = passes[i]
            return final.search(lp, 0.0, ends[i], g, enc).text
    else:
        logps = [rec.ctc_logprobs(audio, rate) for audio, rate in audios]

        def decode(i: int, g):
            d = rec.new_decoder(False, g)
            d.advance(logps[i])
            return rec.tokenizer.decode(d.best().tokens)

    cases: dict[str, list] = {"no list": [None] * len(refs)}
    for boost in args.boost:
        def graph(phrases: list[str]) -> ContextGraph:
            return ContextGraph(parse_hotwords(phrases, rec.tokenizer, default_boost=boost))

        cases[f"own words {boost:g}"] = [graph(ws) if ws else None for ws in words]
        cases[f"domain list {boost:g}"] = [graph(domain)] * len(refs)
        cases[f"unrelated 100 {boost:g}"] = [graph(unrelated)] * len(refs)
    for i in range(len(refs)):  # warm the LM's memo, so that the first case is not timed cold
        decode(i, None)
    print(f"{'case':<18} {'recall':>7} {'CER':>8} {'search ms/utt':>13}")
    for name, graphs in cases.items():
        hyps = []
        t0 = time.perf_counter()
        for i, g in enumerate(graphs):
            hyps.append(decode(i, g))
        ms = (time.perf_counter() - t0) * 1000 / len(refs)
        found = sum(w in h for ws, h in zip(words, hyps) for w in ws)
        total = sum(map(len, words))
        print(f"{name:<18} {found / max(total, 1):7.1%} {cer(refs, hyps):8.2%} {ms:13.1f}")
    if args.write_unrelated:
        args.write_unrelated.write_text("\n".join(unrelated) + "\n", encoding="utf-8")
    print("rare words:", " ".join(domain[:40]), "..." if len(domain) > 40 else "")
    print("unrelated:", " ".join(unrelated[:20]), "...")


if __name__ == "__main__":
    raise SystemExit(main())
