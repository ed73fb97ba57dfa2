"""The Whisper-CTC recipe: cache the frozen encoder's outputs, train the CTC head, tune the
LM fusion on the dev sets, write the model directory and add Whisper's decoder as the rescorer of its
finals (`asr.train.whisper_rescorer`). Every step resumes.

    python -m asr.train.whisper_recipe --config recipes/whisper_ctc.yaml [--set key=value ...]

The same script runs on a CPU or a GPU (`device`); see the model card for the commands
that built the shipped model.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from ..checkpoint import LM, add_lm
from ..config import expand_env, from_dict
from ..decoding import make_decoder
from ..lm import NgramLM
from ..metrics import ErrorCounts
from ..recognizer import cpu_has_native_bf16
from ..tokens import Tokenizer
from ..whisper.bundle import save_whisper_dir
from ..whisper.convert import load_ct2, load_encoder, provenance
from ..whisper.ctc import CTCHead, HeadConfig, WhisperCTC
from .augment import telephone_channel
from .data import Utterance, read_manifest
from .whisper_head import EncoderCache, HeadTrainConfig, cache_encoder_outputs, train_head
from .whisper_rescorer import add_rescorer

log = logging.getLogger("tingxie.whisper_recipe")

__all__ = ["RecipeConfig", "DataSet", "run"]


@dataclass
class DataSet:
    name: str
    manifest: str
    repeat: int = 1  # times an epoch lists it (train sets)
    normalize: bool = False  # put transcripts in spoken form (real corpora)
    holdout: int = 0  # utterances kept out of training as a dev set named NAME-dev (seeded)
    bf16: bool = False  # encode under bf16 autocast (where the CPU computes bf16 natively, or on CUDA)
    telephone: bool = False  # through a telephone channel first (8 kHz, G.711 mu-law and A-law alternately)
    limit: int = 0  # the first N utterances only (0: all)


@dataclass
class RecipeConfig:
    exp_dir: str
    out: str
    name: str
    first_pass: str  # streaming model directory, relative to `out`
    tokenizer_dir: str  # units.txt (+ bpe.model) and lm.arpa.gz with the same units
    train: list[dict[str, Any]]
    dev: list[dict[str, Any]] = field(default_factory=list)
    head: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    lm_weights: list[float] = field(default_factory=lambda: [0.3, 0.5, 0.7])
    lm_bonuses: list[float] = field(default_factory=lambda: [0.5, 1.0, 1.5])
    beam: int = 10
    rescoring_nbest: list[int] = field(default_factory=lambda: [5, 10])  # n-best sizes to choose from ([]: none)
    head_dir: str = "head"  # under exp_dir: the head's checkpoints
    init_head: str = ""  # start from this head state dict (e.g. a previous run's best.pt)
    device: str = "auto"  # cuda when there is a GPU
    threads: int = 0


def load_config(path: str | Path, overrides: dict[str, Any]) -> RecipeConfig:
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    data.update(overrides)
    return from_dict(RecipeConfig, expand_env(data))


def _split(spec: DataSet) -> tuple[list[Utterance], list[Utterance]]:
    """(training utterances, held-out dev utterances) of a train set."""
    utts = read_manifest(spec.manifest, normalize=spec.normalize)[: spec.limit or None]
    if not spec.holdout:
        return utts, []
    order = list(range(len(utts)))
    random.Random(0).shuffle(order)
    held = set(order[: spec.holdout])
    return [u for i, u in enumerate(utts) if i not in held], [u for i, u in enumerate(utts) if i in held]


def _dev_sets(cfg: RecipeConfig) -> dict[str, tuple[list[Utterance], bool]]:
    """(utterances, through a telephone channel) of each dev set by name: each train
    set's held-out part (NAME-dev), then `dev`."""
    out = {}
    for spec in map(lambda d: from_dict(DataSet, d), cfg.train):
        held = _split(spec)[1]
        if held:
            out[f"{spec.name}-dev"] = (held, spec.telephone)
    for spec in map(lambda d: from_dict(DataSet, d), cfg.dev):
        out[spec.name] = (read_manifest(spec.manifest, normalize=spec.normalize)[: spec.limit or None], spec.telephone)
    return out


def dev_utterances(cfg: RecipeConfig) -> dict[str, list[Utterance]]:
    """The dev sets whose audio is used as it is (telephone copies left out), by name."""
    return {name: utts for name, (utts, telephone) in _dev_sets(cfg).items() if not telephone}


def _bf16_ok(device: torch.device) -> bool:
    """Whether bf16 autocast pays here: on CUDA, and on CPUs that compute bf16 natively
    (elsewhere it is emulated and many times slower than float32)."""
    return device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16())


def _caches(cfg: RecipeConfig, encoder) -> tuple[list[tuple[EncoderCache, int]], list[EncoderCache]]:
    """Encoder outputs of the train and dev sets; for a head with its own top k encoder
    layers, the output of the layers below them (cached under NAME-lN)."""
    bf16_ok = _bf16_ok(next(encoder.parameters()).device)
    k = int(cfg.head.get("encoder_layers", 0))
    layers = len(encoder.layers) - k if k else None
    root = Path(cfg.exp_dir) / "cache"
    suffix = f"-l{layers}" if layers else ""
    train = []
    for spec in map(lambda d: from_dict(DataSet, d), cfg.train):
        utts = _split(spec)[0]
        log.info("caching %s (%d utterances)", spec.name, len(utts))
        transform = _telephone if spec.telephone else None
        train.append((cache_encoder_outputs(utts, root / (spec.name + suffix), encoder, bf16=spec.bf16 and bf16_ok,
                                            transform=transform, layers=layers), spec.repeat))
    dev = [cache_encoder_outputs(utts, root / (name + suffix), encoder, transform=_telephone if telephone else None,
                                 layers=layers)
           for name, (utts, telephone) in _dev_sets(cfg).items()]
    return train, dev


def _telephone(k: int, samples):
    return telephone_channel(samples, "mu" if k % 2 == 0 else "a")


def tune_lm(head: CTCHead, dev: list[EncoderCache], tokenizer: Tokenizer, lm, cfg: RecipeConfig) -> dict[str, Any]:
    """The LM weight and bonus of the lowest mean CER over the dev sets (a grid)."""
    with torch.inference_mode():
        head.eval()
        logps = [[head(d.get(i)[None])[0] for i in range(len(d))] for d in dev]
    best: dict[str, Any] = {}
    for w in cfg.lm_weights:
        for b in cfg.lm_bonuses:
            cers = []
            for d, lps in zip(dev, logps):
                counts = ErrorCounts()
                for i, lp in enumerate(lps):
                    search = make_decoder("prefix_beam", cfg.beam, 0, 0.0, lm, w, b)
                    search.advance(lp)
                    counts.add(d.index[i]["text"], tokenizer.decode(search.nbest()[0].tokens))
                cers.append(counts.cer)
            score = sum(cers) / len(cers)
            log.info("LM weight %.2f bonus %.2f: dev CER %s", w, b, " ".join(f"{c:.2%}" for c in cers))
            if not best or score < best["dev_cer"]:
                best = {"weight": w, "bonus": b, "dev_cer": round(score, 4),
                        "dev_cers": {p.path.name: round(c, 4) for p, c in zip(dev, cers)}}
    return best


def run(cfg: RecipeConfig) -> Path:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    exp = Path(cfg.exp_dir)
    exp.mkdir(parents=True, exist_ok=True)
    (exp / f"recipe-{cfg.head_dir}.json").write_text(json.dumps(asdict(cfg), indent=2, ensure_ascii=False))
    device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available() else
                          "cpu" if cfg.device == "auto" else cfg.device)
    ct2 = load_ct2()
    encoder = load_encoder(ct2).to(device)
    train, dev = _caches(cfg, encoder)
    tokenizer = Tokenizer.from_dir(cfg.tokenizer_dir)
    tcfg = from_dict(HeadTrainConfig, cfg.training)
    if tcfg.bf16 and not _bf16_ok(device):
        log.info("training in float32: this CPU has no native bf16")
        tcfg.bf16 = False
    head = CTCHead(HeadConfig(len(tokenizer), **cfg.head), encoder.dims)
    head.copy_encoder_top(encoder)  # the head's own top layers (if any) start as the pretrained ones
    if cfg.init_head:
        state = torch.load(cfg.init_head, weights_only=True)
        missing, unexpected = head.load_state_dict(state, strict=False)
        if unexpected or any(not k.startswith(("encoder_layers.", "encoder_norm.")) for k in missing):
            raise ValueError(f"{cfg.init_head} does not fit this head: missing {missing}, unexpected {unexpected}")
    head = train_head(train, dev, tokenizer, tcfg, exp / cfg.head_dir, head, device)
    lm_path = Path(cfg.tokenizer_dir) / LM
    tuned = tune_lm(head, dev, tokenizer, NgramLM.load(lm_path, tokenizer.units), cfg) if lm_path.exists() else {}
    model = WhisperCTC(head.cfg, encoder.dims)
    model.encoder.load_state_dict(encoder.cpu().state_dict())
    model.head.load_state_dict(head.state_dict())
    extra = {"pretrained": provenance(), "train_sets": cfg.train, "training": asdict(tcfg),
             "init_head": cfg.init_head or None}
    out = save_whisper_dir(cfg.out, model.cpu(), cfg.tokenizer_dir, cfg.name, cfg.first_pass, extra)
    if tuned:
        add_lm(out, lm_path, tuned["weight"], tuned["bonus"], {"tuned_on": tuned["dev_cers"]}, beam=cfg.beam)
    if cfg.rescoring_nbest:
        add_rescorer(out, dev_utterances(cfg), cfg.rescoring_nbest, ct2=ct2)
    log.info("wrote %s (LM fusion %s)", out, tuned)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--step", choices=["all", "rescorer"], default="all",
                   help="rescorer: only add Whisper's decoder to the model directory `out` (CTC weight chosen on dev)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=JSON", help="override a top-level key")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    cfg = load_config(args.config, overrides)
    if args.step == "rescorer":  # only (re)build the rescorer of the model directory `out`
        print(json.dumps(add_rescorer(cfg.out, dev_utterances(cfg), cfg.rescoring_nbest), indent=2))
    else:
        print(run(cfg))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
