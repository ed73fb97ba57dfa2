"""Add Whisper's decoder to a Whisper-CTC model directory as the attention rescorer of its
finals, with the CTC weight chosen on the recipe's dev sets.

    python -m asr.train.whisper_recipe --config recipes/whisper_ctc.yaml --step rescorer

Steps: the decoder's vocabulary is pruned to the Whisper tokens that the model's units and
its LM's n-grams produce; `decoder.safetensors` and `whisper-tokenizer.json` are written
into the model directory; each dev utterance's n-best (the final search as served) is
scored by the decoder once, and the CTC weight of the lowest mean dev CER is recorded
in config.json's `rescoring` section, with the n-best size (the smaller one when dev
does not tell them apart: it costs less). The recipe (`asr.train.whisper_recipe`) runs this
as its last step.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path
from typing import Iterator, Sequence

import torch

from ..audio import read_audio
from ..checkpoint import CONFIG, LM, read_config, sha256
from ..config import DecodingConfig
from ..lm import _iter_arpa
from ..metrics import ErrorCounts
from ..recognizer import cpu_has_native_bf16
from ..tokens import Tokenizer
from ..whisper.bundle import load_whisper_dir
from ..whisper.convert import load_ct2, load_decoder, tokenizer_json
from ..whisper.features import log_mel
from ..whisper.recognizer import WhisperRecognizer
from ..whisper.rescore import RescoreConfig, byte_level_tokenizer, kept_vocabulary, prune_decoder, save_rescorer
from .data import Utterance

log = logging.getLogger("tingxie.whisper_rescorer")

__all__ = ["CTC_WEIGHTS", "NBESTS", "lm_texts", "add_rescorer", "dev_nbest", "choose"]

CTC_WEIGHTS = (1.0, 1.5, 2.0, 3.0, 5.0)
NBESTS = (5, 10)
NBEST_TOLERANCE = 0.0005  # mean dev CER a smaller n-best may lose and still be chosen


def lm_texts(model_dir: Path, tokenizer: Tokenizer) -> Iterator[str]:
    """Every unit's text, then the text of every n-gram of the model's LM."""
    for i in range(len(tokenizer)):
        yield tokenizer.piece_text(i)
    if (model_dir / LM).exists():
        for gram, _, _ in _iter_arpa(model_dir / LM):
            yield tokenizer.join(g for g in gram if g not in ("<s>", "</s>"))


def dev_nbest(rec: WhisperRecognizer, utts: Sequence[Utterance]) -> list[dict]:
    """For each utterance: its reference, the final search's n-best (text, CTC + LM score)
    and each hypothesis' decoder score (`rec` rescores)."""
    out = []
    for u in utts:
        x, sr = read_audio(u.audio)
        enc, logp = rec.encode([log_mel(rec._to_16k(x.mean(axis=0), sr))])[0]
        hyps = rec.nbest(logp)[: rec.rescorer.cfg.nbest]
        texts = [rec.tokenizer.decode(h.tokens) for h in hyps]
        with rec._cast():
            att = rec.rescorer.scores(enc, texts)
        out.append({"ref": u.text, "hyps": texts, "ctc": [h.score for h in hyps], "att": att})
    return out


def _cer(items: list[dict], ctc_weight: float | None, nbest: int = 0) -> float:
    counts = ErrorCounts()
    for it in items:
        n = range(min(nbest or len(it["hyps"]), len(it["hyps"])))
        best = 0 if ctc_weight is None else max(n, key=lambda j: it["att"][j] + ctc_weight * it["ctc"][j])
        counts.add(it["ref"], it["hyps"][best])
    return counts.cer


def choose(dev: dict[str, list[dict]], weights: Sequence[float], nbests: Sequence[int],
           tolerance: float = NBEST_TOLERANCE) -> dict:
    """The n-best size and CTC weight of the lowest mean dev CER; a smaller list (cheaper:
    the decoder's cost grows with it) wins when its mean is within `tolerance` of the
    best. Every set's CER without rescoring and the mean for each choice are reported."""
    def mean(k: int, w: float) -> float:
        return sum(_cer(items, w, k) for items in dev.values()) / len(dev)

    grid = {(k, w): mean(k, w) for k in sorted(nbests) for w in weights}
    best = min(grid.values())
    k = min(k for (k, _), v in grid.items() if v <= best + tolerance)
    w = min(weights, key=lambda w: grid[(k, w)])
    return {"nbest": k, "ctc_weight": w,
            "dev_cer_ctc": {name: round(_cer(items, None), 4) for name, items in dev.items()},
            "dev_cer_mean": {f"{k}-best, ctc_weight {w:g}": round(v, 4) for (k, w), v in grid.items()}}


def _write_section(model_dir: Path, section: dict) -> None:
    config = read_config(model_dir, model_keys=False)
    config["rescoring"] = section
    for f in (section["decoder"], section["tokenizer"]):
        config["files"][f] = sha256(model_dir / f)
    (model_dir / CONFIG).write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")


def add_rescorer(model_dir: str | Path, dev: dict[str, Sequence[Utterance]], nbests: Sequence[int] = NBESTS,
                 weights: Sequence[float] = CTC_WEIGHTS, ct2=None) -> dict:
    """Write the pruned decoder and Whisper's tokenizer into `model_dir` and record the
    `rescoring` section (n-best size and CTC weight chosen on `dev`, scored at the
    precision the model is served at on this machine) in its config.json."""
    model_dir = Path(model_dir)
    bpe = byte_level_tokenizer(tokenizer_json())
    keep = kept_vocabulary(bpe, lm_texts(model_dir, Tokenizer.from_dir(model_dir)))
    log.info("decoder vocabulary pruned to %d of %d tokens", len(keep), bpe.get_vocab_size())
    cfg = RescoreConfig(nbest=max(nbests))
    save_rescorer(model_dir / cfg.decoder, prune_decoder(load_decoder(ct2 or load_ct2()), keep), keep)
    shutil.copyfile(tokenizer_json(), model_dir / cfg.tokenizer)
    section = dataclasses.asdict(cfg)
    section["prompt"] = list(section["prompt"])
    _write_section(model_dir, section)
    rec = WhisperRecognizer(load_whisper_dir(model_dir), torch.device("cpu"), DecodingConfig(),
                            native_bf16=cpu_has_native_bf16())
    chosen = choose({name: dev_nbest(rec, utts) for name, utts in dev.items()}, weights, nbests)
    log.info("rescoring: %s", json.dumps(chosen))
    _write_section(model_dir, {**section, "nbest": chosen["nbest"], "ctc_weight": chosen["ctc_weight"],
                               "tuned_on": chosen})
    return chosen
