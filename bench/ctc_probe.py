"""How far has a CTC model got? For a training checkpoint or a model directory, on a few
utterances of a manifest: the CTC loss per reference unit (against ~6.6 nats, the entropy
of Chinese character frequencies, which a model on the blank plateau sits at), and greedy
CER with a blank penalty (a model that knows characters but still prefers blank shows it
once blank is penalised).

    python bench/ctc_probe.py --checkpoint EXP/ckpt_e001_b000400.pt --model-dir EXP/model \\
        --manifest synth-v1/dev.jsonl [--n 20]
    python bench/ctc_probe.py --model-dir models/default --manifest synth-v1/dev.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from asr.audio import read_audio
from asr.checkpoint import load_model_dir
from asr.decoding import make_decoder
from asr.metrics import ErrorCounts
from asr.recognizer import Recognizer
from asr.train.data import read_manifest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", type=Path, required=True, help="model directory (architecture, units, weights)")
    p.add_argument("--checkpoint", type=Path, help="trainer checkpoint whose weights replace the directory's")
    p.add_argument("--manifest", type=Path, required=True)
    p.add_argument("--n", type=int, default=20, help="utterances, spread over the manifest")
    args = p.parse_args()
    torch.set_num_threads(1)
    bundle = load_model_dir(args.model_dir)
    step = "model directory"
    if args.checkpoint:
        ck = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
        bundle.model.load_state_dict(ck["model"])
        step = f"step {ck['step']}"
    rec = Recognizer(bundle, "cpu", precision="fp32")
    utts = read_manifest(args.manifest, normalize=True)
    utts = utts[:: max(1, len(utts) // args.n)][: args.n]
    loss, units = 0.0, 0
    counts = {pen: ErrorCounts() for pen in (0.0, 2.0, 4.0)}
    for u in utts:
        audio, rate = read_audio(u.audio)
        logp = rec.ctc_logprobs(audio.mean(axis=0), rate).float()
        target = rec.tokenizer.encode(u.text)
        loss += float(torch.nn.functional.ctc_loss(logp[:, None], torch.tensor([target]), torch.tensor([logp.size(0)]),
                                                   torch.tensor([len(target)]), reduction="sum", zero_infinity=True))
        units += len(target)
        for pen, c in counts.items():
            dec = make_decoder("greedy", 1, 0, pen)
            dec.advance(logp)
            c.add(u.text, rec.tokenizer.decode(dec.best().tokens))
    print(json.dumps({"weights": step, "utterances": len(utts), "ctc_loss_per_unit": round(loss / max(units, 1), 3),
                      **{f"cer_blank_penalty_{pen:g}": round(c.cer, 3) for pen, c in counts.items()}}))


if __name__ == "__main__":
    main()
