"""`tingxie` command line: transcribe, train, eval, lm, import-wenet, data synth, serve,
bench. The top layer: it imports `asr` (recognition) and `server` (serving), which never
import it."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from asr.audio import read_audio
from asr.batch import cli as batch_cli
from asr.checkpoint import LM, ModelDirError, add_lm, default_model_dir, load_model_dir, read_config, sha256
from asr.config import ChunkConfig, ConfigError, DecodingConfig
from asr.data import synth
from asr.data.normalize import normalize_text
from asr.data.text_sources import build_pool, join_segments
from asr.importers.wenet import import_wenet
from asr.lm import NgramCounts, estimate, write_arpa
from asr.metrics import ErrorCounts
from asr.recognizer import Recognizer, command_precision
from asr.tokens import Tokenizer
from asr.train.data import read_manifest
from asr.train.trainer import load_train_config, train
from asr.whisper.bundle import is_whisper_dir
from server import cli as server_cli

from . import bench

__all__ = ["main", "build_parser"]


def _decoding_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, default=None, help="model directory (default: $TINGXIE_MODEL or models/default)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--decoding", choices=["greedy", "prefix_beam"], default="greedy")
    p.add_argument("--beam", type=int, default=None,
                   help="beam size for prefix_beam (default: the model's tuned beam with its LM, else 10)")
    p.add_argument("--rescoring", action=argparse.BooleanOptionalAction, default=None,
                   help="attention-rescore the CTC n-best (models with an attention decoder; default: on for models "
                        "that ship a tuned rescorer, such as the default, off for imported WeNet ones)")
    p.add_argument("--lm", default="auto",
                   help="n-gram LM fused into prefix beam search: auto (the model's own, if it ships one), none, "
                        "or an ARPA file")
    p.add_argument("--lm-weight", type=float, default=None, help="LM weight (default: the model's tuned value)")
    p.add_argument("--lm-bonus", type=float, default=None, help="score bonus per unit (default: the model's)")


def _recognizer(args: argparse.Namespace, chunk_ms: int | None = None, history_ms: int = 0):
    asked = getattr(args, "precision", "auto")
    # int8 is for a Whisper-CTC final model; the streaming model then runs at its own default
    precision = command_precision("auto" if asked == "int8" else asked, args.device)
    decoding = DecodingConfig(args.decoding, args.beam, rescoring=args.rescoring, lm=args.lm,
                              lm_weight=args.lm_weight, lm_bonus=args.lm_bonus)
    try:
        return Recognizer.from_dir(args.model or default_model_dir(), args.device, decoding, chunk_ms=chunk_ms or 0,
                                   history_ms=history_ms if chunk_ms else 0, precision=precision,
                                   final_precision=asked)
    except ModelDirError:
        raise
    except ValueError as e:  # a precision or rescoring this device or model cannot do
        raise ConfigError(str(e)) from e


def cmd_transcribe(args: argparse.Namespace) -> int:
    return batch_cli.run(args, _recognizer)


def cmd_train(args: argparse.Namespace) -> int:

    overrides = {}
    for item in args.set or []:
        key, _, value = item.partition("=")
        overrides[key] = json.loads(value) if value[:1] in "[{0123456789-tfn\"" else value
    out = train(load_train_config(args.config, overrides))
    print(out)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:

    rec = _recognizer(args, args.chunk_ms if args.streaming else None, args.history_ms)
    # References in spoken form (digits as characters), as the model writes them.
    utts = read_manifest(args.manifest, normalize=True)[: args.limit or None]
    counts, partials = ErrorCounts(), ErrorCounts()
    audio_s = compute_s = 0.0
    for u in utts:
        audio, rate = read_audio(u.audio)
        mono = audio.mean(axis=0)
        t0 = time.perf_counter()
        if args.streaming:
            s = rec.stream(rate)
            s.accept(mono)
            s.input_finished()
            while s.ready():
                rec.step([s])
            # what a client saw last before the end: the streaming (first-pass) result
            partials.add(u.text, s.partial().text)
            hyp = s.finalize().text
        else:
            hyp = rec.transcribe(mono, rate).text
        compute_s += time.perf_counter() - t0
        audio_s += mono.size / rate
        counts.add(u.text, hyp)
        if args.verbose:
            print(f"{u.id}\tREF {u.text}\tHYP {hyp}")
    mode = f"streaming {args.chunk_ms} ms" if args.streaming else "full context"
    if args.streaming and args.history_ms:
        mode += f", history {rec.chunk.left_chunks * args.chunk_ms} ms"
    print(
        json.dumps(
            {
                "manifest": str(args.manifest),
                "mode": mode,
                "utterances": counts.utterances,
                "cer": round(counts.cer, 4),
                "sub": counts.sub,
                "del": counts.dele,
                "ins": counts.ins,
                "ref_units": counts.ref_units,
                "rtf": round(compute_s / max(audio_s, 1e-9), 4),
                **({"partial_cer": round(partials.cer, 4)} if args.streaming else {}),
            },
            ensure_ascii=False,
        )
    )
    return 0


def cmd_import_wenet(args: argparse.Namespace) -> int:

    report = import_wenet(
        args.src, args.dst, checkpoint=args.checkpoint, config=args.config, name=args.name,
        chunk=ChunkConfig(args.chunk_size, args.left_chunks), norm_eps=args.norm_eps,
        ctc_only=args.ctc_only, overwrite=args.force,
    )
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"{report.dst}\t{report.checkpoint.name} ({report.layout} train.yaml, CMVN from {report.cmvn_source}, "
          f"decoder {'imported' if report.has_decoder else 'not imported'}, {len(report.ignored_keys)} unused tensors dropped)")
    return 0


def cmd_lm(args: argparse.Namespace) -> int:
    """Train a unit n-gram LM on text, or take an ARPA file, and put it into a model directory."""

    if args.arpa is not None:
        if args.text or args.manifest or args.synth_pool is not None:
            raise SystemExit("error: give either --arpa or text to train on, not both")
        if not args.arpa.is_file():
            raise SystemExit(f"error: {args.arpa} not found")
        config = read_config(args.model)  # not the whole model: its lm.bin may be missing
        previous = config.get("lm") or {}
        same = bool(previous) and config["files"].get(previous.get("file")) == sha256(args.arpa)
        # The model's own LM again (e.g. to rebuild its binary): keep what is known about it.
        info = {k: v for k, v in previous.items() if k not in ("file", "binary", "weight", "bonus", "beam")} \
            if same else {"source": str(args.arpa)}
        weight = args.weight if args.weight is not None else previous.get("weight", 0.8) if same else 0.8
        bonus = args.bonus if args.bonus is not None else previous.get("bonus", 2.0) if same else 2.0
        beam = args.beam if args.beam is not None else previous.get("beam") if same else None
        out = add_lm(args.model, args.arpa, weight, bonus, info, beam=beam)
        print(f"{out} and {args.model / 'lm.bin'} ({(args.model / 'lm.bin').stat().st_size / 1e6:.1f} MB); "
              f"weight {weight}, bonus {bonus}, beam {beam or 'default'}")
        return 0

    # A Whisper-CTC directory's LM is its final passes' (the first-pass model keeps its own).
    tok = Tokenizer.from_dir(args.model) if is_whisper_dir(args.model) else load_model_dir(args.model).tokenizer
    texts: list[str] = []
    for f in args.text or []:
        texts += [line for line in Path(f).read_text(encoding="utf-8").splitlines() if line.strip()]
    for m in args.manifest or []:
        texts += [json.loads(line)["text"] for line in Path(m).read_text(encoding="utf-8").splitlines() if line.strip()]
    if args.synth_pool is not None:

        pool = build_pool(args.synth_pool, log=lambda *a: None)
        # the train split only: sentences of the synthetic dev and test sets never reach the LM
        texts += [join_segments(x.split("|")) for items in pool["pieces"]["train"].values() for x in items]
    sentences = [p for p in (tok.pieces(normalize_text(t)) for t in texts) if p]
    if not sentences:
        raise SystemExit("error: no text (give --text, --manifest or --synth-pool, or --arpa)")
    cutoffs = [int(c) for c in args.cutoffs.split(",")] if args.cutoffs else []
    table = estimate(NgramCounts.from_sentences(sentences, args.order), vocab=tok.units, cutoffs=cutoffs)
    out = Path(args.model) / LM
    write_arpa(table, out)
    info = {"order": args.order, "cutoffs": cutoffs, "sentences": len(sentences), "ngrams": len(table),
            "sources": {"text": [str(f) for f in args.text or []], "manifest": [str(m) for m in args.manifest or []],
                        "synth_pool_seed": args.synth_pool}}
    weight = 0.8 if args.weight is None else args.weight
    bonus = 2.0 if args.bonus is None else args.bonus
    add_lm(args.model, out, weight, bonus, info, beam=args.beam)
    print(f"{out}: {len(table)} n-grams of order <= {args.order} from {len(sentences)} sentences "
          f"({out.stat().st_size / 1e6:.1f} MB, binary {(args.model / 'lm.bin').stat().st_size / 1e6:.1f} MB); "
          f"weight {weight}, bonus {bonus}, beam {args.beam or 'default'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tingxie", description="Streaming Mandarin speech recognition")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("transcribe", help="transcribe audio and video files, folders, manifests (batched)",
                       description="Offline batch transcription: docs/batch.md")
    batch_cli.add_arguments(p)
    _decoding_args(p)
    p.set_defaults(func=cmd_transcribe)

    p = sub.add_parser("train", help="train a model from a recipe")
    p.add_argument("--config", required=True, type=Path, help="recipe YAML (see recipes/)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a recipe key")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="CER and real-time factor on a JSONL manifest")
    p.add_argument("--manifest", required=True, type=Path)
    p.add_argument("--streaming", action="store_true")
    p.add_argument("--chunk-ms", type=int, default=640)
    p.add_argument("--history-ms", type=int, default=0,
                   help="streaming attention history in ms, as serve's --history-ms (0: all of the utterance)")
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16", "int8"], default="auto",
                   help="compute precision (auto: bf16 on CPUs with native bf16, else fp32 on a CPU, and int8 for a "
                        "Whisper-CTC model there; bf16/fp16 on CUDA)")
    _decoding_args(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("lm", help="train a unit n-gram language model into a model directory",
                       description="Kneser-Ney n-gram over the model's units (or an existing ARPA file with --arpa), "
                                   "written as MODEL/lm.arpa.gz and its memory-mapped binary MODEL/lm.bin, with the "
                                   "fusion weights in config.json (used by --lm auto). See docs/models.md.")
    p.add_argument("--model", required=True, type=Path, help="model directory to add the LM to")
    p.add_argument("--arpa", type=Path, default=None,
                   help="take this ARPA(.gz) file (KenLM, SRILM, or the model's own lm.arpa.gz to rebuild lm.bin) "
                        "instead of training one")
    p.add_argument("--text", action="append", type=Path, help="text file, one sentence per line")
    p.add_argument("--manifest", action="append", type=Path, help="JSONL manifest: its `text` fields")
    p.add_argument("--synth-pool", type=int, default=None, metavar="SEED",
                   help="the train split of the synthetic corpus's text pool (tingxie data synth --seed)")
    p.add_argument("--order", type=int, default=3)
    p.add_argument("--cutoffs", default="", help="per order, drop n-grams with a smaller (KN) count, e.g. 1,1,2")
    p.add_argument("--weight", type=float, default=None,
                   help="LM weight (tune it on a dev set; default 0.8, or the model's when --arpa is its own LM)")
    p.add_argument("--bonus", type=float, default=None, help="score bonus per unit (tune it with the weight; default 2.0)")
    p.add_argument("--beam", type=int, default=None, help="beam size tuned with the LM (default: the decoder's, 10)")
    p.set_defaults(func=cmd_lm)

    p = sub.add_parser("import-wenet", help="convert a WeNet U2++ Conformer experiment folder into a model directory")
    p.add_argument("src", type=Path, help="WeNet folder with final.pt (or avg_N.pt), train.yaml, global_cmvn, units.txt")
    p.add_argument("dst", type=Path, help="tingxie model directory to write")
    p.add_argument("--checkpoint", help="checkpoint file in SRC (default final.pt, else the only avg_N.pt)")
    p.add_argument("--config", type=Path, help="train.yaml to use (default SRC/train.yaml)")
    p.add_argument("--name", help="model name (default wenet-<folder name>)")
    p.add_argument("--chunk-size", type=int, default=16, help="default streaming chunk in encoder frames")
    p.add_argument("--left-chunks", type=int, default=-1, help="default attention history in chunks (-1: all)")
    p.add_argument("--norm-eps", type=float, default=None, help="LayerNorm eps (default: train.yaml's, else 1e-5)")
    p.add_argument("--ctc-only", action="store_true", help="leave the attention decoder out (no rescoring)")
    p.add_argument("--force", action="store_true", help="replace DST if it exists")
    p.set_defaults(func=cmd_import_wenet)

    data = sub.add_parser("data", help="training data tools")
    dsub = data.add_subparsers(dest="data_command", required=True)
    p = dsub.add_parser("synth", help="generate the synthetic training corpus")
    synth.add_arguments(p)
    p.set_defaults(func=lambda a: synth.run(a) or 0)

    server_cli.register(sub)
    bench.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    try:
        return int(args.func(args) or 0)
    except (ModelDirError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
