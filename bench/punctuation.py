"""Punctuation model: precision/recall/F1 per mark on held-out text, the pause cue on
real speech, and the cost of formatting a final.

    python bench/punctuation.py [--punct models/punct] [--model models/default]
                                [--manifest ../shared/data/real_zh/eval/manifest.jsonl]
                                [--pause-weights 0 2 4 8] [--skip-text]

1. Held-out text: the test split of the training text (`asr.text.punct_train`), cut
   into windows at clause ends as utterances are; the model's own last mark kept.
2. Real speech: eval utterances whose reference is punctuated are recognised (full
   context, as finals); hypothesis characters are aligned to the reference's
   (difflib), and each mark is scored where both sides have the same character. Run
   for each pause weight (log-odds per second of silence after a character beyond
   `pause_floor`), so the cue is measured, not assumed.
3. Cost: milliseconds per final of punctuation + ITN (`Formatter.format`) on those
   finals, one thread.
4. Partials: every token prefix of those finals formatted as a partial (only marks with
   `PARTIAL_RIGHT_CONTEXT` symbols after them): how many marks partials show, and the
   share of them the final has at the same place, for a few right-context lengths.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from asr.text.punct import LABELS, Punctuator  # noqa: E402
from asr.text.punct_train import mark_scores  # noqa: E402

MARKS = {"，": 1, ",": 1, "；": 1, "：": 1, "。": 2, ".": 2, "？": 3, "?": 3, "！": 4, "!": 4, "、": 5}


def ref_labels(text: str) -> tuple[str, list[int]]:
    """Reference characters (upper-cased, marks and spaces removed) and the label after each."""
    chars: list[str] = []
    labels: list[int] = []
    for c in text:
        if c in MARKS:
            if labels:
                labels[-1] = MARKS[c]
        elif not c.isspace():
            chars.append(c.upper())
            labels.append(0)
    return "".join(chars), labels


def scores(pairs) -> dict:
    """Scores of comma, full stop and question mark."""
    return mark_scores(pairs, (1, 2, 3))


def show(title: str, s: dict) -> None:
    cells = "  ".join(f"{m} P {v['precision']:.2f} R {v['recall']:.2f} F1 {v['f1']:.2f} (n={v['count']})"
                      for m, v in s.items())
    print(f"{title:<22} {cells}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--punct", type=Path, default=ROOT / "models" / "punct")
    p.add_argument("--model", type=Path, default=ROOT / "models" / "default")
    p.add_argument("--manifest", type=Path, default=ROOT.parent / "shared" / "data" / "real_zh" / "eval" / "manifest.jsonl")
    p.add_argument("--pause-weights", type=float, nargs="+", default=[0.0, 2.0, 4.0, 8.0])
    p.add_argument("--pause-floor", type=float, default=None, help="default: the model's")
    p.add_argument("--skip-text", action="store_true")
    args = p.parse_args()

    import torch  # noqa: PLC0415

    torch.set_num_threads(1)
    punct = Punctuator.load(args.punct)
    print(f"punctuation model {args.punct} ({sum(f.stat().st_size for f in args.punct.iterdir()) / 1e6:.1f} MB)")
    if not args.skip_text:
        from asr.text.punct_train import _windows, load_corpus  # noqa: PLC0415
        import random  # noqa: PLC0415

        test = load_corpus()["test"]
        pairs = []
        for syms, labels in _windows(test, random.Random(1), 60):
            pairs.extend(zip(punct.predict(syms, final=False), labels))
        show("held-out text", scores(pairs))

    from asr.audio import read_audio  # noqa: PLC0415
    from asr.recognizer import Recognizer, Result, command_precision  # noqa: PLC0415
    from asr.text.format import Formatter, TextOptions, token_chars  # noqa: PLC0415

    rec = Recognizer.from_dir(args.model, "cpu", precision=command_precision("auto", "cpu"))
    rows = [json.loads(line) for line in args.manifest.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [r for r in rows if any(c in r["text"] for c in MARKS)]
    results: list[tuple[Result, str, list[int]]] = []
    for r in rows:
        audio, rate = read_audio(args.manifest.parent / r["audio"])
        res = rec.transcribe(audio[0], rate)
        if res.text:
            results.append((res, *ref_labels(r["text"])))
    print(f"speech: {len(results)} eval utterances with punctuated references, model {rec.name}")
    cfg = punct.model.cfg
    for w in args.pause_weights:
        punct.model.cfg = dataclasses.replace(cfg, pause_weight=w,
                                              pause_floor=cfg.pause_floor if args.pause_floor is None else args.pause_floor)
        fmt = Formatter(punct)
        pairs = []
        for res, ref, labels in results:
            hyp = res.text.upper()
            marks = fmt.marks(res.text, res.tokens, token_chars(res.text, res.tokens), final=True)
            hyp_labels = [0] * len(hyp)
            for end, mark in marks.items():
                if 0 < end <= len(hyp):
                    hyp_labels[end - 1] = LABELS.index(mark)
            sm = difflib.SequenceMatcher(None, ref, hyp, autojunk=False)
            for a, b, n in sm.get_matching_blocks():
                pairs.extend((hyp_labels[b + i], labels[a + i]) for i in range(n))
        show(f"speech, pause weight {w:g}", scores(pairs))
    punct.model.cfg = cfg

    fmt = Formatter(punct)
    t0 = time.perf_counter()
    reps = 5
    for _ in range(reps):
        for res, _, _ in results:
            fmt.format(res, TextOptions(True, True))
    per = (time.perf_counter() - t0) / (reps * len(results)) * 1000
    chars = sum(len(r.text) for r, _, _ in results) / len(results)
    print(f"cost: {per:.2f} ms per final (punctuation + ITN, {chars:.0f} characters on average, 1 thread)")
    t0 = time.perf_counter()
    for _ in range(reps):
        for res, _, _ in results:
            fmt.format(res, TextOptions(False, True))
    print(f"cost: {(time.perf_counter() - t0) / (reps * len(results)) * 1000:.3f} ms per final (ITN alone)")
    import asr.text.format as text_format  # noqa: PLC0415

    for context in (2, 4, 6):
        text_format.PARTIAL_RIGHT_CONTEXT = context
        shown = kept = prefixes = 0
        for res, _, _ in results:
            ranges = token_chars(res.text, res.tokens)
            final_marks = fmt.marks(res.text, res.tokens, ranges, final=True)
            for k in range(1, len(res.tokens)):
                m = fmt.marks(res.text[: ranges[k - 1][1]], res.tokens[:k], ranges[:k], final=False)
                prefixes += 1
                shown += len(m)
                kept += sum(final_marks.get(end) == mark for end, mark in m.items())
        print(f"partials, right context {context}: {shown / prefixes:.2f} marks per partial over {prefixes} "
              f"prefixes; the final has {kept / max(shown, 1):.1%} of them at the same place")
    res = results[0][0]
    print("example:", json.dumps(fmt.format(res, TextOptions(True, True)).to_dict(), ensure_ascii=False)[:600])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
